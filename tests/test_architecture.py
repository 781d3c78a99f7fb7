"""The package's dependency rules, read from the imports themselves (ast), and imports without side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "clip_vectorize"
TOP_LEVEL_MODULES = ["clip_vectorize_service", "clip_encoder", "config"]
RUNTIMES = {"torch", "onnxruntime", "onnx", "transformers"}
WEB_FRAMEWORKS = {"flask", "werkzeug"}
VECTOR_STORE = {"qdrant_client", "qdrant_edge"}


def module_path(module: str) -> Path:
    base = PROJECT_ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def all_modules() -> list[str]:
    package = [".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
               for path in (PROJECT_ROOT / PACKAGE).rglob("*.py")]
    return sorted(TOP_LEVEL_MODULES + package)


@cache
def direct_imports(module: str) -> frozenset[str]:
    """Every module name `module` imports, anywhere in its body (lazy imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module_path(module).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from package import module`
    return frozenset(names)


def is_project(name: str) -> bool:
    return name in all_modules()


def reachable_imports(module: str, imports: Callable[[str], frozenset[str]] = direct_imports) -> set[str]:
    """What importing `module` can import: its own imports and, through project modules, theirs."""
    seen, todo, outside = {module}, [module], set()
    while todo:
        for name in imports(todo.pop()):
            if is_project(name):
                for module in [*parent_packages(name), name]:  # importing a.b.c runs a/__init__ and a/b/__init__
                    if module not in seen:
                        seen.add(module)
                        todo.append(module)
            elif name.split(".")[0] != PACKAGE and name.split(".")[0] not in TOP_LEVEL_MODULES:
                outside.add(name.split(".")[0])
    return outside | seen


def parent_packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts)) if is_project(".".join(parts[:end]))]


def area(name: str) -> list[str]:
    return [module for module in all_modules() if module.startswith(f"{PACKAGE}.{name}")]


def test_the_package_has_the_areas_the_readme_describes():
    assert area("inference") and area("web") and area("gallery")


@pytest.mark.parametrize("module", area("web"))
def test_the_web_area_reaches_no_model_runtime(module):
    assert not reachable_imports(module) & RUNTIMES, f"{module} pulls in {reachable_imports(module) & RUNTIMES}"


@pytest.mark.parametrize("module", area("inference"))
def test_the_inference_area_reaches_no_web_framework_and_no_vector_store(module):
    assert not reachable_imports(module) & (WEB_FRAMEWORKS | VECTOR_STORE), module
    assert not any(name.startswith((f"{PACKAGE}.web", f"{PACKAGE}.gallery")) for name in reachable_imports(module))


@pytest.mark.parametrize("module", area("gallery"))
def test_the_gallery_area_reaches_no_web_framework(module):
    assert not reachable_imports(module) & WEB_FRAMEWORKS, module
    assert not any(name.startswith(f"{PACKAGE}.web") for name in reachable_imports(module)), module


def test_ray_is_imported_by_the_ray_engine_alone():
    importers = [module for module in all_modules() if any(name.split(".")[0] == "ray" for name in
                                                           direct_imports(module))]
    assert importers == [f"{PACKAGE}.gallery.engines.ray"]


def test_only_the_store_area_imports_a_qdrant_library():
    importers = [module for module in all_modules()
                 if any(name.split(".")[0] in VECTOR_STORE for name in direct_imports(module))]
    assert importers and all(module.startswith(f"{PACKAGE}.gallery.store.") for module in importers), importers


def test_config_imports_nothing_of_the_project():
    assert not any(is_project(name) for name in direct_imports("config"))


def test_only_entry_points_import_the_concrete_encoder():
    importers = [module for module in all_modules() if "clip_encoder" in direct_imports(module)]
    assert importers == [f"{PACKAGE}.gallery.__main__", "clip_vectorize_service"]


def test_the_rules_would_catch_a_forbidden_import():
    """The checker itself: a web module that imports torch through an inference module is reported."""

    def with_a_bad_import(module: str) -> frozenset[str]:
        extra = {"clip_vectorize.inference.backends"} if module == "clip_vectorize.web.encode" else set()
        return direct_imports(module) | extra

    assert "torch" in reachable_imports("clip_vectorize.web.encode", with_a_bad_import)
    assert "torch" not in reachable_imports("clip_vectorize.web.encode")


def test_the_web_area_runs_without_the_model_runtimes_loaded():
    """Importing every web module in a fresh interpreter leaves torch, onnxruntime and transformers unloaded."""
    script = (f"import importlib, sys; sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
              f"for module in {area('web')!r}: importlib.import_module(module)\n"
              f"print(sorted(name for name in {sorted(RUNTIMES)!r} if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_importing_every_module_loads_no_model_reads_no_environment_and_starts_no_thread():
    """In a fresh interpreter: environment reads from project code are recorded, file opens of weights refused."""
    script = textwrap.dedent(f"""
        import importlib, os, sys, threading
        root = {str(PROJECT_ROOT)!r}
        sys.path.insert(0, root)
        reads, opened = [], []

        class WatchedEnviron(type(os.environ)):
            def __getitem__(self, key):
                caller = sys._getframe(1)
                while caller and caller.f_code.co_filename.endswith(("os.py", "_collections_abc.py", "os>", "_abc>")):
                    caller = caller.f_back
                if caller and caller.f_code.co_filename.startswith(root) and "/.venv/" not in caller.f_code.co_filename:
                    reads.append((key, caller.f_code.co_filename))
                return super().__getitem__(key)

        os.environ.__class__ = WatchedEnviron
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and
                         str(args[0]).endswith((".safetensors", ".onnx", ".bin", ".pt")) else None)
        threads = threading.active_count()
        for module in {all_modules()!r}:
            importlib.import_module(module)
        assert not reads, f"environment read at import: {{reads}}"
        assert not opened, f"model files opened at import: {{opened}}"
        assert threading.active_count() == threads, "a thread was started at import"
        print("imported", len({all_modules()!r}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported" in done.stdout


def test_the_indexer_command_names_its_model_without_loading_torch():
    """A rerun with nothing to encode must stay quick: importing the command and resolving the model's name leave
    torch (seconds to import) unloaded; only loading the encoder brings it in."""
    script = (f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
              "from clip_vectorize.gallery import __main__ as command\n"
              "from config import Settings\n"
              "command.resolve_model_source(Settings())\n"
              f"print(sorted(name for name in {sorted(RUNTIMES)!r} if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
