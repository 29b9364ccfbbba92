"""What is stale and why: the CI gate behind `infbuild status` and `doit status`."""
from __future__ import annotations

from dataclasses import dataclass

from .engine import BuildContext
from .folder import SIGNATURE
from .reasons import Reason


@dataclass(frozen=True)
class StageState:
    task: str
    target: str
    state: str  # "up to date" | "stale" | "not buildable here"
    reason: str  # why it is stale (up to date: why a rebuilt upstream stage did not make it stale, or "")
    signed: bool | None = None  # up-to-date stages: whether their folder carries a signature (stage.sig)
    kind: str = ""  # a stale stage's reason as data (``infbuild.reasons.Kind``)


def stage_states(ctx: BuildContext) -> list[StageState]:
    states: dict[str, StageState] = {}
    for name, p in ctx.planned.items():
        if p.not_buildable:
            states[name] = StageState(name, p.target, "not buildable here", p.not_buildable)
            continue
        reason = ctx.staleness(p)
        stale_upstream = [u for u in p.upstream if states[f"{u}:{p.recipe.name}"].state != "up to date"]
        if reason is None and stale_upstream:
            reason = Reason("upstream_rebuilt", ", ".join(stale_upstream))
        if reason:
            states[name] = StageState(name, p.target, "stale", str(reason), kind=reason.kind)
        else:  # the reason, if any, says why a rebuilt upstream stage left it up to date
            note = ctx.cut_off(p)
            states[name] = StageState(name, p.target, "up to date", note[1] if note else "",
                                      (p.folder / SIGNATURE).is_file())
    return list(states.values())


def render(states: list[StageState]) -> str:
    width = max((len(s.task) for s in states), default=10)
    lines = []
    for s in states:
        extra = (f": {s.reason}" if s.reason else "") + (", unsigned (infbuild sign signs it)" if s.signed is False else "")
        lines.append(f"{s.task:<{width}}  {s.target:<24}  {s.state}{extra}")
    stale = sum(s.state == "stale" for s in states)
    blocked = sum(s.state == "not buildable here" for s in states)
    unsigned = sum(s.signed is False for s in states)
    lines.append(f"{len(states)} stages: {len(states) - stale - blocked} up to date"
                 + (f" ({unsigned} unsigned)" if unsigned else "") + f", {stale} stale, {blocked} not buildable here")
    return "\n".join(lines)
