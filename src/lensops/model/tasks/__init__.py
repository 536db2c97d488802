"""Tasks by name: ``model.task`` is a built-in name or the import path of a user's own task.

A user's task is a :class:`Task` subclass named as ``package.module:Class`` (the form Serve
uses for applications). Its module must be importable wherever lensops runs it: on every Ray
node (installed, or in the ``--working-dir`` of ``ray job submit``) and in the service.
"""

from __future__ import annotations

import importlib
from functools import cache

from lensops.model.tasks.base import Report, Task
from lensops.model.tasks.change_detection import ChangeDetection
from lensops.model.tasks.classification import Classification
from lensops.model.tasks.regression import Regression

BUILT_IN: dict[str, type[Task]] = {task.name: task for task in (Classification, Regression, ChangeDetection)}

__all__ = ["BUILT_IN", "Report", "Task", "get_task"]


@cache
def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` saying what is accepted when there is none."""
    if name in BUILT_IN:
        return BUILT_IN[name]()
    module_name, sep, attribute = name.partition(":")
    if not (sep and module_name and attribute):
        raise ValueError(f"unknown task '{name}': use {', '.join(BUILT_IN)} or an import path package.module:Class")
    try:
        task_class = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # whatever the user's module raises while importing
        raise ValueError(f"task '{name}' cannot be imported: {type(exc).__name__}: {exc}") from None
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise ValueError(f"task '{name}' is not a subclass of lensops.model.tasks.Task")
    try:
        return task_class()
    except TypeError as exc:  # e.g. an abstract method left unimplemented
        raise ValueError(f"task '{name}' cannot be created: {exc}") from None
