"""Rules of workloads: deploy and undeploy a service, Endophyte leases, storage volumes (pure)."""

from __future__ import annotations

from mycelium.ledger.operation import ADMINS, TIME, NotAuthorized, Operation, OperationError
from mycelium.ledger.rule import Draft, require_admin, require_member
from mycelium.spores.primary import PrimarySpore


def _check_deploy(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    from mycelium.runtime.spec import ServiceSpec, SpecError

    require_admin(op, prev)
    try:
        ServiceSpec.from_wire(op.body.get("spec"))
    except SpecError as exc:
        raise OperationError(f"deploy carries an invalid service spec: {exc}") from exc


def _apply_deploy(op: Operation, draft: Draft) -> None:
    spec = op.body["spec"]
    draft.services[spec["name"]] = spec


def _check_undeploy(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    require_admin(op, prev)
    if op.body.get("name") not in prev.services:
        raise OperationError(f"no service named {op.body.get('name')!r} is deployed")


def _apply_undeploy(op: Operation, draft: Draft) -> None:
    draft.services.pop(op.body["name"], None)


def _check_endophyte(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    from mycelium.ram.leases import KEY, LeaseError, check_action

    require_member(op, prev)
    try:
        check_action(prev.params.get(KEY, {}), op.author, op.body, admin=op.author in prev.params.get(ADMINS, ()))
    except LeaseError as exc:
        if "not an admin" in str(exc):
            raise NotAuthorized(f"endophyte operation refused: {exc}") from exc
        raise OperationError(f"endophyte operation refused: {exc}") from exc


def _apply_endophyte(op: Operation, draft: Draft) -> None:
    from mycelium.ram.leases import KEY, apply_action

    draft.params[KEY] = apply_action(draft.params.get(KEY, {}), op.author, op.body)


def _check_volume(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    from mycelium.storage import volumes

    try:
        volumes.check(op.author, op.body, prev.params.get(volumes.VOLUMES, {}), admins=prev.params.get(ADMINS, []),
                      members=prev.members, now_s=prev.params.get(TIME, 0))
    except volumes.VolumeOpError as exc:
        raise OperationError(str(exc)) from exc


def _apply_volume(op: Operation, draft: Draft) -> None:
    from mycelium.storage import volumes

    draft.params[volumes.VOLUMES] = volumes.apply(op.author, op.body, draft.params.get(volumes.VOLUMES, {}),
                                                  now_s=draft.now)
