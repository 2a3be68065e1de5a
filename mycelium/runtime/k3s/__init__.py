"""The K3s handoff: who runs `k3s server` / `k3s agent` (plan.py, pure), the join token (token.py),
K3s's config file and CNI config generated from the Primary (config.py, templates in k3s-overlay/),
the supervisor of the k3s process (supervisor.py), the `k3s` workload driver (driver.py), and the
in-cluster manager that turns the Primary's services into Kubernetes objects (manager/).
"""
