"""No two modules of ttt_jax import each other, directly or around a circle.

The graph is read from the source with `ast` (nothing is imported): an edge for
every `import ttt_jax.x` / `from ttt_jax.x import y` of a module, function-level
imports included (a lazy import is still a dependency), to the submodule `y`
when it is one, else to the module `x`.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'ttt_jax'


def _modules() -> dict[str, str]:
  """{dotted module name: file} of every .py file of the package (a package's
  __init__.py is the package's own name)."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for file in files:
      if file.endswith('.py'):
        path = os.path.join(directory, file)
        name = os.path.relpath(path, ROOT)[: -len('.py')].replace(os.sep, '.')
        modules[name.removesuffix('.__init__')] = path
  return modules


def _imported(node: ast.AST, module: str, modules: dict[str, str]) -> list[str]:
  if isinstance(node, ast.Import):
    return [a.name for a in node.names if a.name in modules]
  if not isinstance(node, ast.ImportFrom):
    return []
  base = node.module or ''
  if node.level:  # relative: resolved against this module's package
    parent = module.split('.')[: -node.level] if module in modules else []
    base = '.'.join(parent + ([base] if base else []))
  found = []
  for alias in node.names:
    submodule = f'{base}.{alias.name}'
    if submodule in modules:
      found.append(submodule)
    elif base in modules:
      found.append(base)
  return found


def import_graph() -> dict[str, set[str]]:
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    graph[module] = {
        target
        for node in ast.walk(tree)
        for target in _imported(node, module, modules)
        if target != module
    }
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as [a, b, ..., a], or None (depth-first search)."""
  state, stack = {}, []  # state: 1 on the stack, 2 finished

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 1:
        return stack[stack.index(target) :] + [target]
      if target not in state and (cycle := visit(target)):
        return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_ttt_jax_has_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_the_check_sees_cycles_and_lazy_imports():
  graph = import_graph()
  # A function-level import is an edge (stats imports train.ttt inside a function).
  assert 'ttt_jax.train.ttt' in graph['ttt_jax.formats.stats']
  # `from package import submodule` points at the submodule.
  assert 'ttt_jax.data.ttt_data' in graph['ttt_jax.formats.stats']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None
