"""Tasks by name: the built-ins, NeuroGym environments, and a user's own file.

``make_task(name, params)`` builds a task from a config's ``[task]`` section:

* a built-in name of :data:`TASKS` (``evidence``, ``pattern``);
* ``neurogym:ENV``, any NeuroGym environment (optional extra ``mdgl-analysis[neurogym]``);
* ``path/to/file.py:ClassName``, a :class:`Task` subclass in the user's own file.

See :mod:`.base` for the protocol every task follows.
"""

from __future__ import annotations

from typing import Any

from mdgl_analysis.plugins import Kind, is_file_name, load
from mdgl_analysis.tasks.base import (
    LOSSES,
    Task,
    TaskBatch,
    TaskError,
    check_batch,
    check_task,
    draw,
    one_line,
)
from mdgl_analysis.tasks.evidence import EvidenceTask
from mdgl_analysis.tasks.pattern import PatternTask

__all__ = [
    "LOSSES",
    "TASKS",
    "Task",
    "TaskBatch",
    "TaskError",
    "check_batch",
    "check_task",
    "draw",
    "make_task",
    "task_class",
]

TASKS: dict[str, type[Task]] = {"evidence": EvidenceTask, "pattern": PatternTask}
"""The built-in tasks by name; a task class added here is found by ``task.name`` for the rest
of the session (docs/api.md registers one from a notebook)."""
NEUROGYM_PREFIX = "neurogym:"


def _choices() -> str:
    return f"{', '.join(TASKS)}, neurogym:ENV or FILE.py:CLASS"


def is_file_task(name: str) -> bool:
    """``FILE.py:CLASS`` names a task in a user's file."""
    return is_file_name(name)


def task_class(name: str) -> type:
    """The class a task name refers to (a user's file is imported here); TaskError otherwise."""
    if name in TASKS:
        return TASKS[name]
    if name.startswith(NEUROGYM_PREFIX):
        from mdgl_analysis.tasks.neurogym import NeuroGymTask

        return NeuroGymTask
    if is_file_task(name):
        return _load_file_class(name)
    raise TaskError(f"task.name = {name!r} is not allowed: {_choices()}")


_TASK_CLASS = Kind(
    "class",
    "tasks",
    "a subclass of mdgl_analysis.tasks.Task",
    lambda v: isinstance(v, type) and issubclass(v, Task),
)


def _load_file_class(name: str) -> type:
    return load(name, "task.name", TaskError, _TASK_CLASS)


def make_task(name: str, params: dict[str, Any] | None = None) -> Task:
    """Build and check the task ``name`` with ``params``; TaskError (one line) when anything is
    wrong: unknown name, missing file or class, bad parameters, a broken protocol."""
    cls = task_class(name)
    params = dict(params or {})
    try:
        if name.startswith(NEUROGYM_PREFIX):
            env = name[len(NEUROGYM_PREFIX) :]
            stated = params.pop("env", env)
            if stated != env:  # the name carries the environment; a second one is a mistake
                raise TaskError(
                    f"task.env = {stated!r} is not allowed: the environment is part of the task's "
                    f"name, task.name = 'neurogym:{env}' (set task.name = 'neurogym:{stated}')"
                )
            task = cls(env=env, **params)
        else:
            task = cls(**params)
    except TaskError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's constructor
        raise TaskError(
            f"task {name!r} could not be created: {type(err).__name__}: {one_line(err)}"
        ) from None
    check_task(task)
    return task
