"""Named algorithm variants: each is one function, registered under the name the config selects it by.

    ADVANTAGE_ESTIMATORS = Registry("algorithm.advantage")

    @ADVANTAGE_ESTIMATORS.register("rloo")
    def rloo(rewards, config): ...

A new variant is one decorated function; config.py checks names against the registry (with did-you-mean).
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, key: str):
        self.key = key  # the config key that selects from this registry, for error messages
        self._functions: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(function: F) -> F:
            if name in self._functions:
                raise ValueError(f"{self.key}: {name} is registered twice")
            self._functions[name] = function
            return function

        return add

    def __getitem__(self, name: str) -> F:
        if name not in self._functions:
            raise KeyError(f"{self.key}={name!r}: not one of {', '.join(self.names())}")
        return self._functions[name]

    def names(self) -> list[str]:
        return list(self._functions)
