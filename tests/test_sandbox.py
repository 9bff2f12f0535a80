"""The code sandbox and the code verifier: real subprocesses in real namespaces, hostile programs included."""

import glob
import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from grpo_cli.config import SandboxConfig, VerifierConfig
from grpo_cli.verifier import build_verifier
from grpo_cli.verifier.code_check import extract_program, load_tests
from grpo_cli.errors import GrpoError
from grpo_cli.verifier.sandbox import check_sandbox_available, run_python

LIMITS = SandboxConfig(wall_time_s=2.0, cpu_time_s=1.0, memory_mb=256, max_processes=16)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Sandbox directories are created here, so a test can see that none is left."""
    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def processes_working_in(root: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/cwd").startswith(str(root)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def run_and_check_cleanup(scratch, source: str, stdin: str = ""):
    start = time.perf_counter()
    result = run_python(source, stdin, LIMITS)
    elapsed = time.perf_counter() - start
    assert list(scratch.iterdir()) == []
    assert processes_working_in(scratch) == []
    return result, elapsed


def test_a_program_reads_stdin_and_writes_stdout_in_a_fresh_directory(scratch):
    source = "import os\nprint(sum(map(int, input().split())))\nprint(sorted(os.listdir('.')))"
    result, _ = run_and_check_cleanup(scratch, source, "2 3\n")
    assert (result.exit_code, result.timed_out) == (0, False)
    assert result.stdout == "5\n['main.py']\n"


@pytest.mark.parametrize("path", [str(Path(__file__)), "/etc/passwd", os.path.expanduser("~"), "/work", "/tmp"])
def test_the_project_home_and_etc_are_not_in_the_sandbox(scratch, path):
    source = f"import os\nprint(os.path.exists({path!r}), *os.listdir('/'))"
    result, _ = run_and_check_cleanup(scratch, source)
    exists, *root = result.stdout.split()
    assert exists == "False"
    assert {"dev", "proc", "python", "sandbox", "usr"} <= set(root) <= {"bin", "dev", "lib", "lib32", "lib64", "libx32", "proc", "python", "sandbox", "sbin", "usr"}


def test_the_program_runs_as_nobody_without_capabilities(scratch):
    source = "import os\nstatus = open('/proc/self/status').read()\nprint(os.getuid(), 'CapEff:\\t0000000000000000' in status)"
    result, _ = run_and_check_cleanup(scratch, source)
    assert result.stdout == ("65534 True\n" if os.geteuid() == 0 else f"{os.geteuid()} True\n")


def test_an_infinite_loop_is_stopped_by_its_cpu_or_wall_limit(scratch):
    result, elapsed = run_and_check_cleanup(scratch, "while True:\n    pass")
    assert result.exit_code != 0 or result.timed_out
    assert elapsed < LIMITS.wall_time_s + 1.0


def test_a_sleeping_program_is_stopped_at_the_wall_limit(scratch):
    result, elapsed = run_and_check_cleanup(scratch, "import time\ntime.sleep(600)")
    assert result.timed_out
    assert LIMITS.wall_time_s <= elapsed < LIMITS.wall_time_s + 1.0


def test_a_fork_bomb_hits_the_process_limit_and_every_process_dies(scratch):
    result, elapsed = run_and_check_cleanup(scratch, "import os\nwhile True:\n    os.fork()")
    assert result.exit_code != 0  # fork() fails with EAGAIN at max_processes
    assert elapsed < LIMITS.wall_time_s + 1.0


def test_the_process_limit_counts_every_process_of_the_run(scratch):
    source = (
        "import os, time\nstarted = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    started += 1\nprint(started)"
    )
    result, _ = run_and_check_cleanup(scratch, source)
    assert 0 < int(result.stdout) < LIMITS.max_processes  # the program itself is one of them


def test_a_daemon_that_left_the_process_group_dies_with_the_run(scratch):
    source = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\nprint('parent done')"
    result, elapsed = run_and_check_cleanup(scratch, source)
    assert (result.exit_code, result.stdout) == (0, "parent done\n")
    assert elapsed < LIMITS.wall_time_s  # ended with the program, not at the wall limit (nor after the sleep)


def test_a_10_gb_allocation_fails(scratch):
    result, elapsed = run_and_check_cleanup(scratch, "block = bytearray(10 * 1024**3)\nprint('allocated')")
    assert result.exit_code != 0 and "allocated" not in result.stdout
    assert elapsed < LIMITS.wall_time_s


def test_there_is_no_network(scratch):
    source = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=5)\nprint('connected')"
    result, elapsed = run_and_check_cleanup(scratch, source)
    assert result.exit_code != 0 and "connected" not in result.stdout
    assert elapsed < 2.0  # refused at once (no route), not after the 5 s connect timeout


def test_program_is_the_last_fenced_block():
    completion = "Plan:\n```python\nx = 1\n```\nFinal version:\n```py\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_program(completion) == "def add(a, b):\n    return a + b\n"
    assert extract_program("def add(a, b): return a + b") is None
    assert extract_program("```python\nunterminated") is None


def test_hidden_tests_only_run_for_evaluation():
    answer = json.dumps({"tests": ["assert f(1) == 1"], "hidden_tests": ["assert f(2) == 2"]})
    assert load_tests(answer, "train") == ["assert f(1) == 1"]
    assert load_tests(answer, "eval") == ["assert f(1) == 1", "assert f(2) == 2"]
    with pytest.raises(ValueError, match='"tests" list'):
        load_tests('["assert True"]', "train")
    with pytest.raises(ValueError, match="a test must be"):
        load_tests(json.dumps({"tests": [{"input": "1"}]}), "train")


ADD_TESTS = json.dumps({
    "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(0.5, 0.25) == 0.75"],
    "hidden_tests": ["assert add('a', 'b') == 'ab'", "assert add(10**20, 1) == 10**20 + 1"],
})
ECHO_TESTS = json.dumps({"tests": [{"stdin": "2 3\n", "stdout": "5\n"}, {"stdin": "10 -4\n", "stdout": "6"}]})


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


@pytest.fixture(scope="module")
def code_verifier():
    config = VerifierConfig(name="code", timeout_s=10.0, num_workers=2, sandbox=LIMITS)
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "grpo-sandbox-*")))
    with build_verifier(config) as verifier:
        yield verifier
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "grpo-sandbox-*"))) == before
    assert processes_working_in(tempfile.gettempdir() + "/grpo-sandbox-") == []


def test_code_reward_is_the_fraction_of_tests_passed(code_verifier):
    completions = [
        fenced("def add(a, b):\n    return a + b"),
        fenced("def add(a, b):\n    return int(a) + int(b)"),  # fails 0.5 + 0.25
        fenced("def add(a, b):\n    return a - b"),
        "I would add them.",
    ]
    scores = code_verifier.score(completions, [ADD_TESTS] * 4)
    assert [s.reward for s in scores] == pytest.approx([1.0, 2 / 3, 0.0, 0.0])
    assert [s.reason for s in scores] == ["correct", "wrong", "wrong", "no_answer"]
    assert scores[0].extracted == "def add(a, b):\n    return a + b\n"


def test_hidden_tests_count_only_when_scoring_for_evaluation(code_verifier):
    only_numbers = fenced("def add(a, b):\n    return int(a + b) if isinstance(a, int) else a + b if isinstance(a, float) else 0")
    [train] = code_verifier.score([only_numbers], [ADD_TESTS], split="train")
    [evaluation] = code_verifier.score([only_numbers], [ADD_TESTS], split="eval")
    assert (train.reward, evaluation.reward) == pytest.approx((1.0, 4 / 5))


def test_stdin_stdout_tests(code_verifier):
    program = fenced("a, b = map(int, input().split())\nprint(a + b)")
    wrong = fenced("a, b = map(int, input().split())\nprint(a * b)")
    scores = code_verifier.score([program, wrong], [ECHO_TESTS] * 2)
    assert [s.reward for s in scores] == [1.0, 0.0]


@pytest.mark.parametrize(
    "cheat",
    ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"],
)
def test_leaving_before_the_tests_is_no_pass(code_verifier, cheat):
    [score] = code_verifier.score([fenced(f"def add(a, b):\n    return 0\n{cheat}")], [ADD_TESTS])
    assert score.reward == 0.0


@pytest.mark.parametrize(
    "program",
    [
        "def add(a, b):\n    while True:\n        pass",
        "import os\nwhile True:\n    os.fork()",
        "block = bytearray(10 * 1024**3)",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=5)\ndef add(a, b):\n    return a + b",
    ],
    ids=["infinite loop", "fork bomb", "10 GB", "network"],
)
def test_hostile_programs_score_zero_within_the_limits(code_verifier, program):
    start = time.perf_counter()
    [score] = code_verifier.score([fenced(program)], [json.dumps({"tests": ["assert add(2, 3) == 5"]})])
    assert score.reward == 0.0
    assert time.perf_counter() - start < LIMITS.wall_time_s + 1.0


def test_a_malformed_code_answer_is_an_error(code_verifier):
    [score] = code_verifier.score([fenced("x = 1")], ["not json"])
    assert (score.reward, score.reason) == (0.0, "error")


def add_returning(body: str) -> str:
    return f"def add(a, b):\n    {body}"


ALWAYS_EQUAL = "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"

# Each program solves nothing; each tries a way to make the verdict say otherwise.
CHEATS = {
    "prints every token it can read, then leaves": (
        "import os, re\ntext = ''.join(open(name, errors='replace').read() for name in os.listdir('.') if os.path.isfile(name))\n"
        "print(*re.findall(r'\\w+-d[o]ne-\\w+', text), flush=True)\nos._exit(0)"
    ),
    "returns an object equal to everything": ALWAYS_EQUAL + add_returning("return Anything()"),
    "returns an int subclass equal to everything": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n" + add_returning("return Int(0)")
    ),
    "patches builtins and AssertionError": (
        "import builtins\nbuiltins.AssertionError = type('Nothing', (Exception,), {})\nbuiltins.isinstance = lambda *a: True\n"
        "builtins.int = object\n" + add_returning("return 0")
    ),
    "exits with status 0 inside the call": "import os\n" + add_returning("os._exit(0)"),
    "raises SystemExit inside the call": add_returning("raise SystemExit(0)"),
    "reports forged values through every descriptor": (
        "import json, os\nfor fd in range(3, 64):\n    for test in range(8):\n        for k in range(8):\n            try:\n"
        "                os.write(fd, (json.dumps([test, k, 'value', True]) + '\\n').encode())\n            except OSError:\n"
        "                pass\n" + add_returning("return 0")
    ),
    "replaces the harness's encoder": (
        "import sys\nharness = sys.modules['__main__']\nharness.encode = lambda value: True\n" + add_returning("return 0")
    ),
    "a child that outlives the program reports a pass": (
        "import json, os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.3)\n    for fd in range(64):\n        try:\n"
        "            os.write(fd, (json.dumps([0, 0, 'value', True]) + '\\n').encode())\n        except OSError:\n            pass\n"
        "    os._exit(0)\n" + add_returning("time.sleep(1)\n    return 0")
    ),
    "writes files where results might be read": (
        "import os\nfor name in ('stdout.txt', 'results.txt', '../stdout.txt', '/tmp/stdout.txt', 'steps.json'):\n    try:\n"
        "        open(name, 'w').write('[0, 0, \"value\", true]\\n')\n    except OSError:\n        pass\n" + add_returning("return 0")
    ),
}


@pytest.mark.parametrize("cheat", list(CHEATS.values()), ids=list(CHEATS))
def test_a_program_that_games_the_harness_scores_zero(code_verifier, cheat):
    answer = json.dumps({"tests": ["assert add(2, 3) == 5", "assert add(1, 1) == 2", "assert isinstance(add(4, 5), int) and add(4, 5) > 8"]})
    [score] = code_verifier.score([fenced(cheat)], [answer])
    assert (score.reward, score.correct) == (0.0, False)


def test_patching_what_the_assert_calls_does_not_change_the_verdict(code_verifier):
    answer = json.dumps({"tests": ["import math\nassert math.isclose(area(1.0), 3.14159, rel_tol=1e-4)", "assert sorted(digits(321)) == [1, 2, 3]"]})
    cheat = (
        "import math, builtins\nmath.isclose = lambda *a, **k: True\nbuiltins.sorted = lambda x: [1, 2, 3]\n"
        "def area(r):\n    return 0.0\ndef digits(n):\n    return [9]"
    )
    honest = "import math\ndef area(r):\n    return math.pi * r * r\ndef digits(n):\n    return [int(c) for c in str(n)]"
    scores = code_verifier.score([fenced(cheat), fenced(honest)], [answer] * 2)
    assert [s.reward for s in scores] == [0.0, 1.0]


def test_a_program_cannot_find_the_expected_output_anywhere(code_verifier, tmp_path):
    """A stdin test's expected output is in the dataset file and the verifier's memory, neither in the sandbox:
    a program that searches the files it can open (the dataset's folder included) finds nothing to print."""
    answer = json.dumps({"tests": [{"stdin": "", "stdout": "expected-output-71f3c2\n"}]})
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "Print the secret.", "answer": answer}) + "\n")
    search = (
        "import os, re\n"
        f"for top in ({str(tmp_path)!r}, '/sandbox', '/etc', '/home', '/tmp'):\n"
        "    for root, dirs, files in os.walk(top):\n        for name in files:\n            try:\n"
        "                found = re.findall(r'expected-output-[0-9a-f]+', open(os.path.join(root, name), errors='ignore').read())\n"
        "            except OSError:\n                found = []\n            if found:\n                print(found[0])\n"
        "                raise SystemExit"
    )
    [score] = code_verifier.score([fenced(search)], [answer])
    assert score.reward == 0.0


def test_tests_with_state_and_truth_values(code_verifier):
    answer = json.dumps({"tests": [
        "s = Stack()\ns.push(3)\ns.push(4)\nassert s.pop() == 4\nassert s.pop() == 3",
        "assert is_prime(7)\nassert not is_prime(8)",
        "assert pair() == (1, 'a') and pair() != [1, 'a']",
        "assert table() == {1: {2, 3}, 'x': [None, 1.5]}",
    ]})
    honest = (
        "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n"
        "    def pop(self):\n        return self.items.pop()\n"
        "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n"
        "def pair():\n    return (1, 'a')\ndef table():\n    return {1: {3, 2}, 'x': [None, 1.5]}"
    )
    wrong = honest.replace("self.items.pop()", "self.items.pop(0)").replace("n > 1 and", "True or").replace("(1, 'a')", "[1, 'a']")
    scores = code_verifier.score([fenced(honest), fenced(wrong)], [answer] * 2)
    assert [s.reward for s in scores] == [1.0, 0.25]


@pytest.mark.parametrize(
    "test, message",
    [
        ("for a in range(3):\n    assert add(a, 0) == a", "top-level"),
        ("assert all(add(a, 0) == a for a in range(3))", "compare at the top"),
        ("def check(f):\n    assert f(1, 1) == 2\ncheck(add)", "top-level"),
        ("add(1, 2)", "no assert"),
        ("assert add(1, 2) ==", "not Python"),
    ],
)
def test_tests_that_would_be_judged_inside_the_sandbox_are_refused(test, message):
    with pytest.raises(ValueError, match=message):
        load_tests(json.dumps({"tests": [test]}), "train")


def test_without_bubblewrap_the_code_verifier_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no setpriv
    check_sandbox_available.cache_clear()
    try:
        with pytest.raises(GrpoError, match=r"needs the `bwrap` command .*apt-get install bubblewrap") as error:
            build_verifier(VerifierConfig(name="code"))
    finally:
        check_sandbox_available.cache_clear()
    assert "\n" not in str(error.value)


def test_objects_that_lie_about_truth_and_hashing_fail(code_verifier):
    answer = json.dumps({"tests": ["assert add(0, 7)", "assert add(1, 2) in {3, 30}", "assert {add(1, 2): 'x'} == {3: 'x'}"]})
    liar = (
        "class Liar:\n    def __bool__(self):\n        return True\n    def __eq__(self, other):\n        return True\n"
        "    def __hash__(self):\n        return hash(3)\n" + add_returning("return Liar()")
    )
    scores = code_verifier.score([fenced(liar), fenced(add_returning("return a + b"))], [answer] * 2)
    assert [s.reward for s in scores] == [0.0, 1.0]
