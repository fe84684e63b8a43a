"""The sandbox's Python-level guard: what a program may import, name and call.

A program is screened (its syntax tree may not touch private or dunder
attributes, nor frame and code internals) and compiled here, then runs with
builtins that cannot open files, evaluate strings or reach the interpreter
(no open, exec, eval, compile, input, vars, breakpoint, exit; getattr and
friends refuse the screened names), and an `__import__` that serves only the
allowlisted modules, as copies that hold their public functions and classes but
none of the modules they import themselves (so no `typing.sys.modules['os']`).
`common` is this package's library.

This is one layer: the forked process the program runs in also gets OS limits
(confine.py), so a way around this guard still cannot open a file, a socket or
a process.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
import types
from typing import Any

PROGRAM_FILENAME = '<program>'

# Modules a program may import, all imported once by the worker before it forks.
ALLOWED_MODULES = (
    'numpy',
    'numpy.random',
    'numpy.linalg',
    'numpy.fft',
    'numpy.ma',
    'numpy.lib',
    'numpy.lib.stride_tricks',
    'numpy.polynomial',
    'scipy',
    'scipy.ndimage',
    'scipy.special',
    'math',
    'random',
    'itertools',
    'collections',
    'collections.abc',
    'functools',
    'operator',
    'copy',
    'dataclasses',
    'enum',
    're',
    'typing',
    'heapq',
    'bisect',
    'statistics',
    'time',
    'common',
)
_LIBRARY = 'ttt_jax.induction.common'  # what `import common` serves

# Public names a copy leaves out: file I/O (the OS limits refuse it anyway; this
# gives a clear error), code that evaluates strings, and attribute getters that
# would bypass the screen.
_DENIED_NAMES = {
    'numpy': {
        'load',
        'loadtxt',
        'save',
        'savetxt',
        'savez',
        'savez_compressed',
        'genfromtxt',
        'fromfile',
        'fromregex',
        'memmap',
        'show_config',
        'show_runtime',
        'get_include',
        'info',
        'test',
    },
    'typing': {'get_type_hints'},
    'operator': {'attrgetter', 'methodcaller'},
}

# Dunder attributes a program may use: none of them leads to a frame, a module,
# a class's subclasses or a function's globals.
_SAFE_DUNDERS = frozenset(
    {
        '__init__',
        '__post_init__',
        '__name__',
        '__doc__',
        '__len__',
        '__iter__',
        '__next__',
        '__getitem__',
        '__setitem__',
        '__contains__',
        '__eq__',
        '__lt__',
        '__hash__',
        '__repr__',
        '__str__',
        '__call__',
    }
)
# Public attributes that reach the interpreter's internals (frames, code, memory).
_INTERNAL_ATTRIBUTES = frozenset(
    {
        'gi_frame',
        'gi_code',
        'cr_frame',
        'cr_code',
        'ag_frame',
        'ag_code',
        'f_back',
        'f_globals',
        'f_locals',
        'f_builtins',
        'f_code',
        'tb_frame',
        'tb_next',
        'ctypes',
    }
)
_SAFE_DUNDER_NAMES = frozenset({'__name__', '__doc__', '__debug__'})
_REMOVED_BUILTINS = (
    'open',
    'exec',
    'eval',
    'compile',
    'input',
    'breakpoint',
    'exit',
    'quit',
    'help',
    'vars',
    'globals',  # the module dict holds __builtins__, and with it __import__
    'locals',
    'copyright',
    'credits',
    'license',
    '__loader__',
    '__spec__',
)


class ScreenError(Exception):
  """A program uses something the sandbox does not allow (names the line)."""


def attribute_allowed(name: str) -> bool:
  if name.startswith('_'):
    return name in _SAFE_DUNDERS
  return name not in _INTERNAL_ATTRIBUTES


def screen(source: str) -> types.CodeType:
  """The program compiled, after checking its syntax tree; SyntaxError or ScreenError."""
  tree = ast.parse(source, PROGRAM_FILENAME)
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      modules = (
          [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
      )
      imported = [] if isinstance(node, ast.Import) else [a.name for a in node.names]
      for name in modules + imported:
        if any(part.startswith('_') for part in name.split('.')):
          raise ScreenError(f'line {node.lineno}: importing {name!r} is not allowed')
    names = []
    if isinstance(node, ast.Attribute):
      names = [node.attr]
    elif isinstance(node, ast.MatchClass):  # `case C(attr=...)` reads attributes too
      names = node.kwd_attrs
    for name in names:
      if not attribute_allowed(name):
        raise ScreenError(f'line {node.lineno}: attribute {name!r} is not allowed')
    if isinstance(node, ast.Name) and node.id.startswith('__') and node.id.endswith('__'):
      if node.id not in _SAFE_DUNDER_NAMES:
        raise ScreenError(f'line {node.lineno}: name {node.id!r} is not allowed')
  return compile(tree, PROGRAM_FILENAME, 'exec')


def _checked(name: Any) -> None:
  if isinstance(name, str) and not attribute_allowed(name):
    raise AttributeError(f'attribute {name!r} is not allowed in the sandbox')


def _getattr(obj, name, *default):
  _checked(name)
  return getattr(obj, name, *default)


def _hasattr(obj, name):
  _checked(name)
  return hasattr(obj, name)


def _setattr(obj, name, value):
  _checked(name)
  setattr(obj, name, value)


def _delattr(obj, name):
  _checked(name)
  delattr(obj, name)


class Environment:
  """The allowlisted modules (as copies) and the builtins every program gets; built
  once in the worker, before it forks a process per program."""

  def __init__(self):
    real = {
        name: importlib.import_module(_LIBRARY if name == 'common' else name)
        for name in ALLOWED_MODULES
    }
    by_module = {id(module): name for name, module in real.items()}
    # A copy's name is no key of sys.modules, so `from numpy import x` cannot fall
    # back to the real submodule `numpy.x`.
    self.modules = {name: types.ModuleType(f'sandboxed {name}') for name in ALLOWED_MODULES}
    for name, module in real.items():
      self._fill(self.modules[name], module, _DENIED_NAMES.get(name, set()), by_module)
    self.builtins = self._builtins()

  def _fill(self, copy, module, denied, by_module) -> None:
    for attr, value in vars(module).items():
      if attr.startswith('_') or attr in denied:
        continue
      if isinstance(value, types.ModuleType):
        allowed = by_module.get(id(value))
        if allowed is None:
          continue  # a module the program may not import: not reachable through this one
        value = self.modules[allowed]
      setattr(copy, attr, value)
    public = getattr(module, '__all__', None)
    names = vars(copy) if public is None else public
    copy.__all__ = [a for a in names if not a.startswith('_') and hasattr(copy, a)]

  def _builtins(self) -> dict[str, Any]:
    table = dict(vars(builtins))
    for name in _REMOVED_BUILTINS:
      table.pop(name, None)
    table.update(
        __import__=self._import,
        getattr=_getattr,
        hasattr=_hasattr,
        setattr=_setattr,
        delattr=_delattr,
    )
    return table

  def _import(self, name, globals=None, locals=None, fromlist=(), level=0):  # pylint: disable=redefined-builtin
    del globals, locals
    if level:
      raise ImportError('relative imports are not allowed in the sandbox')
    if name in self.modules:
      return self.modules[name if fromlist else name.partition('.')[0]]
    # numpy's C code imports its private modules lazily (PyImport_Import) through the
    # __import__ of the frame that runs: the program's. That call only needs the module
    # to be loaded (it then reads sys.modules), so it gets the package's copy back.
    top = name.partition('.')[0]
    if top in self.modules and name in sys.modules and '._' in f'.{name}':
      return self.modules[top]
    raise ImportError(f'import of {name!r} is not allowed in the sandbox')

  def fresh_globals(self) -> dict[str, Any]:
    """The module namespace of one run of a program."""
    return {'__builtins__': dict(self.builtins), '__name__': 'program'}
