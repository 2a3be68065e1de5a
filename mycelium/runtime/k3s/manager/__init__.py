"""The in-cluster manager: turns the Primary's services into Kubernetes objects.

    objects.py    the desired objects of every service, a pure function of the Primary's services
                  and placements (Namespace, ConfigMap, Deployment/DaemonSet, Service, NetworkPolicy)
    reconcile.py  creates, updates and deletes, through the `kubernetes` client, exactly the objects
                  it owns (label app.kubernetes.io/managed-by=mycelium), never anything else
    __main__.py   the controller loop run by the image in images/manager/
"""
