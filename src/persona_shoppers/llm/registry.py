"""The backends ``build_llm`` knows, by name: how to build one from the ``llm`` parameters.

A backend module registers its factory with :func:`register_backend`; ``llm/__init__.py``
imports the built-in ones. See docs/llm.md ("Adding a backend").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from persona_shoppers.llm.base import LLM
from persona_shoppers.llm.models import DEFAULT_MODEL

DEFAULT_BACKEND = "local"

Factory = Callable[[Mapping[str, Any], Mapping[str, Any] | None], LLM]


@dataclass(frozen=True)
class Backend:
    """``build(config, credentials)``: the LLM of an ``llm`` parameters block;
    ``model_tag(config)``: the model it points at, as one readable string (an MLflow tag)."""

    build: Factory
    model_tag: Callable[[Mapping[str, Any]], str]


BACKENDS: dict[str, Backend] = {}


def register_backend(
    name: str, model_tag: Callable[[Mapping[str, Any]], str]
) -> Callable[[Factory], Factory]:
    """Decorate a factory ``(config, credentials) -> LLM`` to build ``backend: <name>``
    (names are matched in lower case)."""
    name = name.lower()

    def register(build: Factory) -> Factory:
        if name in BACKENDS:
            raise ValueError(f"LLM backend {name!r} is registered twice")
        BACKENDS[name] = Backend(build, model_tag)
        return build

    return register


def as_given(value: Any) -> Any:
    """The cast of a parameter passed on as the config gives it."""
    return value


def parameters(config: Mapping[str, Any], casts: Mapping[str, Callable[[Any], Any]]) -> dict:
    """The constructor arguments ``config`` sets, each through its cast (e.g. ``int``); the
    ones it does not set keep the constructor's defaults, so those are defined once, there."""
    return {key: cast(config[key]) for key, cast in casts.items() if key in config}


def backend_name(config: Mapping[str, Any]) -> str:
    return str(config.get("backend", DEFAULT_BACKEND)).lower()


def get_backend(config: Mapping[str, Any]) -> Backend:
    """The registered backend ``config["backend"]`` names (default ``local``)."""
    name = backend_name(config)
    if name not in BACKENDS:
        raise ValueError(f"llm.backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def configured_model(config: Mapping[str, Any]) -> str:
    """The ``model`` of the ``llm`` parameters (default: the default local model)."""
    return str(config.get("model", DEFAULT_MODEL))


def model_tag(config: Mapping[str, Any]) -> str:
    """The model the ``llm`` parameters point at, as one readable string; for an unknown
    backend its ``model`` (``build_llm`` is the one to report the backend)."""
    backend = BACKENDS.get(backend_name(config))
    return backend.model_tag(config) if backend else configured_model(config)
