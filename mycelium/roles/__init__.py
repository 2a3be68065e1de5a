"""Capability probe (psutil) and the deterministic role assignment rule.

Pure modules: `profile` (CapabilityProfile, changed_enough), `fitness` (per-node score and bars),
`assignment` (assign_roles), `readonly` (QuorumWatch). The one impure module, `probe`, is not
imported here so that pure cores importing this package never load psutil.
"""

from mycelium.roles.assignment import Assignment, assign_roles, bft_size
from mycelium.roles.fitness import DEFAULT_ROLE_CONFIG, Candidate, Role, RoleConfig, RoleError, next_battery_epochs
from mycelium.roles.profile import CapabilityProfile, ProfileError, Reachability, changed_enough
from mycelium.roles.readonly import QuorumWatch, ReadOnlyConfig, ReadOnlyMode, ReadOnlyStatus

__all__ = [
    "Assignment",
    "Candidate",
    "CapabilityProfile",
    "DEFAULT_ROLE_CONFIG",
    "ProfileError",
    "QuorumWatch",
    "Reachability",
    "ReadOnlyConfig",
    "ReadOnlyMode",
    "ReadOnlyStatus",
    "Role",
    "RoleConfig",
    "RoleError",
    "assign_roles",
    "bft_size",
    "changed_enough",
    "next_battery_epochs",
]
