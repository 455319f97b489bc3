"""An ensemble run directory: `train.members` networks trained one after another on the same data,
each a run directory of its own, whose predictions `eval`, `sample` and `serve` average
(`charrnn.nn.ensemble`).

    RUN_DIR/ensemble.json   {"members": ["member-1", ..., "member-K"], "data": the corpus}: what makes
                            it an ensemble
    RUN_DIR/config.yaml     the ensemble's configuration (train.members > 1)
    RUN_DIR/vocab.json      the vocabulary every member shares
    RUN_DIR/data/           the corpus prepared on the fly, read by every member
    RUN_DIR/member-K/       a run directory (`charrnn.runs.run`): its own checkpoints and metrics

Member k of K trains with seed `train.seed + k - 1` and 1/K of `train.max_time` (its guard, and where a
schedule is fitted to the time, its horizon), so the ensemble keeps the run's time budget; every
other setting is the ensemble's, except those its entry of `train.member_settings` gives it (members
that differ in more than the seed make more different mistakes, and their mean gains more):
`Config.member` derives it. Resuming an ensemble resumes each member that has saved, as
`--resume` resumes a run (one that has reached its end stops at once, unless the resume moves its
end, e.g. with more max_steps), and starts those that have not.
"""

from __future__ import annotations

import json
from pathlib import Path

from charrnn.config import MAX_MEMBERS
from charrnn.errors import UserError
from charrnn.files.atomic import write_atomic

MANIFEST = "ensemble.json"


def is_ensemble(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def member_name(k: int) -> str:
    return f"member-{k}"


def write_manifest(path: Path, members: int, data: Path):
    """The manifest of a new ensemble of `members` networks reading the prepared corpus `data`."""
    write_atomic(Path(path) / MANIFEST, json.dumps({"members": [member_name(k) for k in range(1, members + 1)],
                                                    "data": str(Path(data).resolve())}))


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise TypeError("not an object")
        return manifest
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{Path(path) / MANIFEST} is not what charrnn writes ({error}); "
                        f"train the ensemble again with --force") from None


def ensemble_data(path: Path) -> str:
    """The prepared corpus an ensemble's members read, which a resume reads unless given SOURCE."""
    data = read_manifest(path).get("data")
    if not isinstance(data, str) or not (Path(data) / "meta.json").is_file():
        raise UserError(f"the ensemble's data directory {data} is gone; give SOURCE to resume with")
    return data


def member_directories(path: Path) -> list[Path]:
    """The member run directories an ensemble's manifest names, checked to be what charrnn writes."""
    path = Path(path)
    names = read_manifest(path).get("members")
    expected = [member_name(k) for k in range(1, len(names) + 1)] if isinstance(names, list) else None
    if names != expected or not 2 <= len(names) <= MAX_MEMBERS:
        raise UserError(f"{path / MANIFEST} is not what charrnn writes (its members are not member-1 to member-K, "
                        f"2 <= K <= {MAX_MEMBERS}); train the ensemble again with --force")
    return [path / name for name in names]
