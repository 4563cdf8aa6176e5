"""The CEL engine: cel-expr-python's parser and checker in front, a planner to Python closures and a runtime on
plain JSON values behind (see environment, compiler, values)."""
