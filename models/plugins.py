"""Model builders from the user's own code: installed packages and references.

Two ways, neither touching the engine:

* An installed package declares builders in the `vae_engine.models` entry-point
  group (in its `pyproject.toml`):

      [project.entry-points."vae_engine.models"]
      ladder = "mypkg.ladder:build"

  and `--model=ladder` picks it.
* `--model=mypkg.ladder:build` names any builder importable from `sys.path`
  (`PYTHONPATH`, the working directory of `python -m`).

What is referenced is a builder function, `build(image_shape, latent_dim)` (or
`build(image_shape, latent_dim, pixel_mean=None)` to start from the data's mean
image), or a `models.ModelSpec` for full control. A function's spec is read
from the function itself: its docstring's first line is the description, its
`latent_dim` default the default latent size (required: without one, the user
must pass `--latent_dim`), and a `pixel_mean` parameter means it initialises
from the data.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import re
from typing import Optional

from engine.errors import UserError
from models.registry import ModelSpec

ENTRY_POINT_GROUP = "vae_engine.models"
# `package.module:function` (the attribute may be dotted: `module:Class.make`).
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*"
                        r"(\.[A-Za-z_]\w*)*$")
# What an installed model may be called: checkpoints store the name between
# `;` and `=` separators (`models.architecture`).
_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


class PluginError(UserError):
  """A user's builder that cannot be found, loaded or described."""


def is_reference(name: str) -> bool:
  """Whether `name` has the form `package.module:function`."""
  return bool(_REFERENCE.match(name))


@functools.lru_cache(maxsize=None)
def installed() -> dict:
  """Entry-point name -> its `importlib.metadata.EntryPoint`, for every
  installed package's `vae_engine.models` builders (nothing is imported).
  A name two packages both claim maps to the list of their entry points."""
  found: dict = {}
  for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
    found.setdefault(entry.name, []).append(entry)
  return found


def load_installed(name: str) -> ModelSpec:
  """The spec of the installed builder `name`.

  Raises:
    PluginError: If it is not installed, is installed twice, or cannot be
      imported or described.
  """
  entries = installed().get(name)
  if not entries:
    raise KeyError(name)
  where = f"--model={name}"
  if not _NAME.match(name):
    raise PluginError(f"{where}: the entry point's name is not a model name "
                      "(letters, digits, _ . - only); rename it in its "
                      "package's metadata")
  if len(entries) > 1:
    raise PluginError(
        f"{where}: {len(entries)} installed packages declare it "
        f"({', '.join(_distribution(e) for e in entries)}); uninstall one, "
        "or name the builder as package.module:function")
  entry = entries[0]
  try:
    target = entry.load()
  # SystemExit too: a plug-in's sys.exit at import must not end the run.
  except (Exception, SystemExit) as e:  # pylint: disable=broad-except
    raise PluginError(
        f"{where}: cannot load {entry.value} (from "
        f"{_distribution(entry)}): {_reason(e)}; fix or reinstall that "
        "package") from None
  return spec_of(target, name, entry.value)


def load_reference(reference: str) -> ModelSpec:
  """The spec of the builder `package.module:function`.

  Raises:
    PluginError: If the module cannot be imported, lacks the attribute, or
      the attribute is not a builder.
  """
  module_name, attribute = reference.split(":", 1)
  where = f"--model={reference}"
  try:
    target = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and module_name.startswith(e.name):
      raise PluginError(
          f"{where}: no module named {e.name!r} on the Python path; install "
          "its package, or add its folder to PYTHONPATH") from None
    raise PluginError(f"{where}: importing {module_name} failed: "
                      f"{_reason(e)}; fix that module") from None
  # SystemExit too: a plug-in's sys.exit at import must not end the run.
  except (Exception, SystemExit) as e:  # pylint: disable=broad-except
    raise PluginError(f"{where}: importing {module_name} failed: "
                      f"{_reason(e)}; fix that module") from None
  for part in attribute.split("."):
    if not hasattr(target, part):
      raise PluginError(f"{where}: {module_name} has no {attribute!r}; name "
                        "a builder function it defines") from None
    target = getattr(target, part)
  return spec_of(target, reference, reference)


def spec_of(target, name: str, origin: str) -> ModelSpec:
  """A `ModelSpec` named `name` for a builder function or a spec.

  Args:
    target: What the entry point or reference names.
    name: The `--model` value that named it.
    origin: Where it came from, for messages (`module:function`).

  Raises:
    PluginError: If `target` is neither, or a function's defaults cannot be
      read from it.
  """
  where = f"--model={name}"
  if isinstance(target, ModelSpec):
    return dataclasses.replace(target, name=name)
  if not callable(target):
    raise PluginError(f"{where}: {origin} is not a builder (it is a "
                      f"{type(target).__name__}); name a function "
                      "build(image_shape, latent_dim) or a models.ModelSpec")
  try:
    parameters = inspect.signature(target).parameters
  except (TypeError, ValueError):
    parameters = {}
  if len([p for p in parameters.values() if p.kind in (
      p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]) < 2:
    raise PluginError(f"{where}: {origin} does not take (image_shape, "
                      "latent_dim); a builder is build(image_shape, "
                      "latent_dim) -> models.VariationalAutoencoder")
  latent = parameters.get("latent_dim")
  default_latent = (latent.default if latent is not None
                    and latent.default is not inspect.Parameter.empty
                    else None)
  if default_latent is not None and (
      isinstance(default_latent, bool) or not isinstance(default_latent, int)
      or default_latent < 1):
    raise PluginError(f"{where}: {origin}'s latent_dim default is "
                      f"{default_latent!r}; make it a positive integer")
  return ModelSpec(
      name=name, build=target, default_latent_dim=default_latent,
      description=_first_line(target) or f"{origin} (no docstring)",
      initializes_from_data="pixel_mean" in parameters)


def _first_line(target) -> str:
  doc = inspect.getdoc(target) or ""
  return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def describe_installed() -> list[tuple[str, str]]:
  """(name, description) of every installed builder, sorted; a builder that
  cannot be loaded is described by why, so listing never fails."""
  from models import registry  # pylint: disable=g-import-not-at-top
  described = []
  for name in sorted(installed()):
    if name in registry.names():
      described.append((name, "(ignored: the engine has a model of this "
                        f"name; {_distribution(installed()[name][0])} must "
                        "rename its entry point)"))
      continue
    try:
      described.append((name, load_installed(name).description))
    except UserError as e:
      described.append((name, f"(cannot be loaded: "
                        f"{str(e).split(': ', 1)[-1]})"))
  return described


def _distribution(entry) -> str:
  dist = getattr(entry, "dist", None)
  return f"{dist.name} {dist.version}" if dist is not None else entry.value


def _reason(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text}"[:300] if text else \
      type(error).__name__


def resolve(name: str) -> Optional[ModelSpec]:
  """The user's builder `name` names (installed, or a reference), or None if
  it names none."""
  if is_reference(name):
    return load_reference(name)
  try:
    return load_installed(name)
  except KeyError:
    return None


def installed_names() -> list[str]:
  """The installed builders' names, without importing any of them."""
  return sorted(installed())
