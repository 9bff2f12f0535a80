"""The test harness that runs inside the sandbox as main.py (standard library only: grpo_cli is not there).

Beside it in the scratch folder: program.py (the candidate program) and steps.json (one list of steps per
test: ["exec", statements] or ["eval", expression]). It runs the program once, then each test in a forked
copy of the program's state, and writes one JSON line per evaluated expression to the stdout it was given:

    [test, k, "value", VALUE]    or    [test, k, "raised"]

VALUE encodes exact builtin types only: bool, int, float, str and None as themselves; list, tuple, set,
frozenset and dict as {"list": [...]}, {"tuple": [...]}, {"set": [...]}, {"frozenset": [...]} and
{"dict": [[key, value], ...]}. Anything else (a subclass, an object with its own __eq__) raises. The
program's own output goes nowhere. Nothing here is trusted: code_check.py explains why it need not be.
"""

import json
import os
import sys

CONTAINERS = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}


def encode(value):
    kind = type(value)
    if kind in (bool, int, float, str, type(None)):
        return value
    if kind in CONTAINERS:
        return {CONTAINERS[kind]: [encode(item) for item in value]}
    if kind is dict:
        return {"dict": [[encode(key), encode(item)] for key, item in value.items()]}
    raise TypeError(f"{kind.__name__} is not a builtin value")


def run_test(index, steps, namespace, results):
    evaluated = 0
    for kind, source in steps:
        if kind == "exec":
            exec(compile(source, f"<test {index}>", "exec"), namespace)
            continue
        try:
            line = [index, evaluated, "value", encode(eval(compile(source, f"<test {index}>", "eval"), namespace))]
            text = json.dumps(line)
        except BaseException:
            text = json.dumps([index, evaluated, "raised"])
        os.write(results, (text + "\n").encode())
        evaluated += 1


def main():
    results = os.dup(1)
    os.dup2(2, 1)  # the program's prints are not results
    with open("steps.json") as file:
        tests = json.load(file)
    with open("program.py") as file:
        program = file.read()
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    exec(compile(program, "program.py", "exec"), namespace)
    for index, steps in enumerate(tests):
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                run_test(index, steps, namespace, results)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
