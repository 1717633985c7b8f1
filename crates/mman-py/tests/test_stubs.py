"""The type stubs ship with the package and name only what exists."""

import ast
import os

import mman
from mman import _mman


def test_stubs_and_py_typed_are_installed_and_match_the_module():
    here = os.path.dirname(mman.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    tree = ast.parse(open(os.path.join(here, "_mman.pyi")).read())
    names = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert hasattr(_mman, node.name), node.name
            names += 1
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_mman, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name != "__init__":
                    assert hasattr(cls, item.name), f"{node.name}.{item.name}"
                    names += 1
    assert names > 80
