"""Harbor: seeded warehouse word problems with exact answers and worked solutions.

Levels (data.difficulty picks which to mix; a curriculum starts at [1]):
  1  one addition or subtraction, numbers below 50 (the CPU demo's task); the solution is the one-line sum
     or, for half the problems, the column working with the carry or borrow; with data.tool_solutions, that
     share of the solutions calls the calculator instead (see calculator_solution)
  2  two steps: pallets x items, stock in and out, equal shares, kg/g and m/cm conversions, minutes to hours
  3  fractions and mixed numbers, percentages, means and medians

Arithmetic is exact (fractions.Fraction). A solution is one line per step and ends with `FINAL: <answer>`;
answers are integers, decimals ("2.5 kg"), fractions ("3/4", "2 1/4") or percentages ("25%").

The problems come from one random.Random(seed) stream, de-duplicated on the question text: the first
data.num_eval distinct problems are the eval split and the next data.num_train the train split, so the splits
never share a question and the eval split does not change when num_train does.
"""

from __future__ import annotations

import argparse
import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Callable, NamedTuple

from grpo_cli.config import Config, DataConfig
from grpo_cli.data import Example
from grpo_cli.environment.calculator import evaluate, format_number
from grpo_cli.environment.tool_calls import TAGGED_OUTPUT
from grpo_cli.errors import GrpoError
from grpo_cli.verifier.equivalence import terminates


class Problem(NamedTuple):
    question: str
    steps: list[str]
    answer: str
    calculation: str = ""  # level 1: the one arithmetic step, "34 - 28" (what a calculator call would hold)

    @property
    def solution(self) -> str:
        return "\n".join([*self.steps, f"FINAL: {self.answer}"])


ITEMS = ["crates", "boxes", "pallets", "sacks", "barrels", "drums", "bins", "cartons", "tires", "coils"]
PLACES = ["the north shelf", "the loading dock", "bay A", "the cold room", "the back room", "the east rack"]
GOODS = ["rice", "flour", "sugar", "nails", "salt", "coffee"]


def decimal(x: Fraction) -> str:
    """A non-negative terminating fraction as a decimal string: 5/2 -> '2.5', 3/125 -> '0.024', 3 -> '3'."""
    places = 0
    while (x * 10**places).denominator != 1:
        places += 1
    digits = str(x.numerator * 10**places // x.denominator).rjust(places + 1, "0")
    return f"{digits[:-places]}.{digits[-places:]}" if places else digits


def improper(x: Fraction) -> str:
    """9/4 -> '9/4', 2 -> '2'."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def mixed(x: Fraction) -> str:
    """A non-negative fraction as a whole, proper or mixed number: 9/4 -> '2 1/4', 3/4 -> '3/4', 2 -> '2'."""
    whole, rest = divmod(x.numerator, x.denominator)
    if rest == 0:
        return str(whole)
    part = f"{rest}/{x.denominator}"
    return f"{whole} {part}" if whole else part


def number(x: Fraction) -> str:
    """A decimal when it terminates, else a mixed number."""
    return decimal(x) if terminates(x) else mixed(x)


# Level 1: one step, numbers below 50. Like hand-written data, the solutions come in two styles, picked at
# random: the one-line sum, or the column working (units, then tens, with the carry or borrow).


def column_working(a: int, op: str, b: int) -> list[str]:
    """48 + 49 -> ['units: 8 + 9 = 17, carry 1', 'tens: 4 + 4 + 1 = 9']; for answers below 100."""
    (a_tens, a_units), (b_tens, b_units) = divmod(a, 10), divmod(b, 10)
    if op == "+":
        carry = int(a_units + b_units >= 10)
        units = f"units: {a_units} + {b_units} = {a_units + b_units}" + (", carry 1" if carry else "")
        tens = f"tens: {a_tens} + {b_tens}" + (" + 1" if carry else "") + f" = {a_tens + b_tens + carry}"
    else:
        borrow = int(a_units < b_units)
        units = f"units: {a_units + 10 * borrow} - {b_units} = {a_units + 10 * borrow - b_units}" + (", borrow 1" if borrow else "")
        tens = f"tens: {a_tens} - {b_tens}" + (" - 1" if borrow else "") + f" = {a_tens - b_tens - borrow}"
    return [units, tens]


def one_step(rng: random.Random, question: str, a: int, op: str, b: int) -> Problem:
    answer = a + b if op == "+" else a - b
    steps = column_working(a, op, b) if rng.random() < 0.5 else [f"{a} {op} {b} = {answer}"]
    return Problem(question, steps, str(answer), f"{a} {op} {b}")


def calculator_solution(problem: Problem) -> Problem:
    """The level-1 problem solved with one tagged calculator call, then the final line. The calculator's
    answer sits between them as a rollout with environment=calculator puts it (TAGGED_OUTPUT):

        <calculator>34 - 28</calculator>
        <output>6</output>
        FINAL: 6

    The model writes the call and the final line; the <output> line is the environment's (SFT leaves it out
    of the loss, see sft.py)."""
    output = TAGGED_OUTPUT.format(format_number(evaluate(problem.calculation)))
    # Problem.solution joins the steps with newlines: the one after the output is the join's.
    return problem._replace(steps=[f"<calculator>{problem.calculation}</calculator>{output.removesuffix(chr(10))}"])


def restock(rng: random.Random) -> Problem:
    items, place = rng.choice(ITEMS), rng.choice(PLACES)
    a, b = rng.randint(1, 49), rng.randint(1, 49)
    question = f"{place.capitalize()} has {a} {items}. A truck delivers {b} more {items}. How many {items} are there now?"
    return one_step(rng, question, a, "+", b)


def ship_out(rng: random.Random) -> Problem:
    items, place = rng.choice(ITEMS), rng.choice(PLACES)
    a = rng.randint(2, 49)
    b = rng.randint(1, a)
    question = f"{place.capitalize()} has {a} {items}. {b} {items} are shipped out. How many {items} are left?"
    return one_step(rng, question, a, "-", b)


def combine(rng: random.Random) -> Problem:
    items = rng.choice(ITEMS)
    first, second = rng.sample(PLACES, 2)
    a, b = rng.randint(1, 49), rng.randint(1, 49)
    question = f"There are {a} {items} in {first} and {b} {items} in {second}. How many {items} are there in all?"
    return one_step(rng, question, a, "+", b)


def compare(rng: random.Random) -> Problem:
    items = rng.choice(ITEMS)
    first, second = rng.sample(PLACES, 2)
    b = rng.randint(1, 48)
    a = rng.randint(b + 1, 49)
    question = (
        f"{first.capitalize()} has {a} {items} and {second} has {b} {items}. "
        f"How many more {items} does {first} have?"
    )
    return one_step(rng, question, a, "-", b)


# Level 2: two steps, multiplication and division, unit conversions.


def damaged_pallets(rng: random.Random) -> Problem:
    items = rng.choice([i for i in ITEMS if i != "pallets"])
    pallets, per_pallet = rng.randint(2, 12), rng.randint(5, 40)
    total = pallets * per_pallet
    damaged = rng.randint(1, total // 4)
    question = (
        f"A truck brings {pallets} pallets with {per_pallet} {items} on each pallet. "
        f"{damaged} of the {items} are damaged. How many undamaged {items} are there?"
    )
    steps = [f"{pallets} * {per_pallet} = {total}", f"{total} - {damaged} = {total - damaged}"]
    return Problem(question, steps, str(total - damaged))


def stock_flow(rng: random.Random) -> Problem:
    items, place = rng.choice(ITEMS), rng.choice(PLACES)
    start, arrived = rng.randint(20, 300), rng.randint(10, 200)
    shipped = rng.randint(1, start + arrived)
    question = (
        f"{place.capitalize()} starts the day with {start} {items}. {arrived} {items} arrive in the morning "
        f"and {shipped} are shipped in the afternoon. How many {items} are there at the end of the day?"
    )
    after = start + arrived
    return Problem(question, [f"{start} + {arrived} = {after}", f"{after} - {shipped} = {after - shipped}"], str(after - shipped))


def equal_shares(rng: random.Random) -> Problem:
    items = rng.choice(ITEMS)
    trucks, each = rng.randint(2, 12), rng.randint(3, 60)
    question = f"{trucks * each} {items} are loaded equally onto {trucks} trucks. How many {items} go on each truck?"
    return Problem(question, [f"{trucks * each} / {trucks} = {each}"], str(each))


def kilograms_plus_grams(rng: random.Random) -> Problem:
    good = rng.choice(GOODS)
    kg, grams = rng.randint(1, 20), rng.randint(50, 950)
    question = f"A sack of {good} weighs {kg} kg and a bag of {good} weighs {grams} g. What is their total weight in grams?"
    steps = [f"{kg} kg = {kg} * 1000 g = {kg * 1000} g", f"{kg * 1000} + {grams} = {kg * 1000 + grams}"]
    return Problem(question, steps, f"{kg * 1000 + grams} g")


def grams_to_kilograms(rng: random.Random) -> Problem:
    good = rng.choice(GOODS)
    bags, grams = rng.randint(2, 40), rng.choice(range(50, 1000, 50))
    total = bags * grams
    question = f"{bags} bags of {good} weigh {grams} g each. What is their total weight in kilograms?"
    steps = [f"{bags} * {grams} = {total} g", f"{total} g / 1000 = {decimal(Fraction(total, 1000))} kg"]
    return Problem(question, steps, f"{decimal(Fraction(total, 1000))} kg")


def rope_lengths(rng: random.Random) -> Problem:
    meters, pieces = rng.randint(2, 30), rng.randint(2, 9)
    piece_cm = rng.randint(10, meters * 100 // pieces)
    used = pieces * piece_cm
    question = f"A coil of rope is {meters} m long. {pieces} pieces of {piece_cm} cm each are cut from it. How many centimeters of rope are left?"
    steps = [f"{meters} m = {meters * 100} cm", f"{pieces} * {piece_cm} = {used} cm", f"{meters * 100} - {used} = {meters * 100 - used}"]
    return Problem(question, steps, f"{meters * 100 - used} cm")


def unloading_hours(rng: random.Random) -> Problem:
    trucks, minutes = rng.randint(2, 12), rng.choice(range(15, 91, 5))
    total = trucks * minutes
    hours = Fraction(total, 60)
    question = f"Unloading one truck takes {minutes} minutes. How many hours does it take to unload {trucks} trucks?"
    steps = [f"{trucks} * {minutes} = {total} minutes", f"{total} / 60 = {number(hours)} hours"]
    return Problem(question, steps, f"{number(hours)} hours")


# Level 3: fractions, percentages, means and medians.

FRACTIONS = [Fraction(1, 2), Fraction(1, 3), Fraction(2, 3), Fraction(1, 4), Fraction(3, 4), Fraction(2, 5), Fraction(3, 8), Fraction(5, 6)]


def fraction_of(rng: random.Random) -> Problem:
    items, part = rng.choice(ITEMS), rng.choice(FRACTIONS)
    count = part.denominator * rng.randint(2, 30)
    fragile = count * part
    question = f"{part} of the {count} {items} in stock are fragile. How many {items} are not fragile?"
    steps = [f"{count} * {part} = {fragile}", f"{count} - {fragile} = {count - fragile}"]
    return Problem(question, steps, str(count - fragile))


def add_mixed(rng: random.Random) -> Problem:
    good = rng.choice(GOODS)
    a = rng.randint(0, 5) + rng.choice(FRACTIONS)
    b = rng.randint(0, 5) + rng.choice(FRACTIONS)
    total = a + b
    question = f"One bin holds {mixed(a)} tons of {good} and another holds {mixed(b)} tons. How many tons of {good} are there in all?"
    steps = [f"{mixed(a)} + {mixed(b)} = {improper(a)} + {improper(b)} = {improper(total)}"]
    if mixed(total) != improper(total):
        steps.append(f"{improper(total)} = {mixed(total)}")
    return Problem(question, steps, mixed(total))


def percent_of(rng: random.Random) -> Problem:
    items, percent = rng.choice(ITEMS), rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75])
    rate = Fraction(percent, 100)
    count = rate.denominator * rng.randint(1, 400 // rate.denominator)  # so that the answer is whole
    failed = count * rate
    question = f"{percent}% of the {count} {items} failed inspection. How many {items} failed?"
    return Problem(question, [f"{count} * {percent}/100 = {failed}"], str(failed))


def damaged_percent(rng: random.Random) -> Problem:
    items, count = rng.choice(ITEMS), rng.choice([20, 25, 40, 50, 80, 100, 125, 200, 250, 400])
    damaged = rng.randint(1, count - 1)
    share = Fraction(damaged, count)
    question = f"{damaged} of the {count} {items} in a shipment are damaged. What percent of the {items} are damaged?"
    steps = [f"{damaged} / {count} = {decimal(share)}", f"{decimal(share)} * 100 = {decimal(share * 100)}%"]
    return Problem(question, steps, f"{decimal(share * 100)}%")


def mean_deliveries(rng: random.Random) -> Problem:
    days = rng.randint(3, 6)
    counts = [rng.randint(5, 60) for _ in range(days)]
    total = sum(counts)
    mean = Fraction(total, days)
    question = f"Over {days} days the dock received {', '.join(map(str, counts[:-1]))} and {counts[-1]} pallets. What is the mean number of pallets per day?"
    steps = [f"{' + '.join(map(str, counts))} = {total}", f"{total} / {days} = {number(mean)}"]
    return Problem(question, steps, number(mean))


def median_bins(rng: random.Random) -> Problem:
    items, bins = rng.choice(ITEMS), rng.randint(4, 7)
    counts = [rng.randint(1, 90) for _ in range(bins)]
    ordered = sorted(counts)
    question = f"{bins} bins hold {', '.join(map(str, counts[:-1]))} and {counts[-1]} {items}. What is the median number of {items} per bin?"
    steps = [f"sorted: {', '.join(map(str, ordered))}"]
    middle = bins // 2
    if bins % 2:
        median = Fraction(ordered[middle])
        steps.append(f"the middle value is {ordered[middle]}")
    else:
        low, high = ordered[middle - 1], ordered[middle]
        median = Fraction(low + high, 2)
        steps.append(f"({low} + {high}) / 2 = {decimal(median)}")
    return Problem(question, steps, decimal(median))


LEVELS: dict[int, list[Callable[[random.Random], Problem]]] = {
    1: [restock, ship_out, combine, compare],
    2: [damaged_pallets, stock_flow, equal_shares, kilograms_plus_grams, grams_to_kilograms, rope_lengths, unloading_hours],
    3: [fraction_of, add_mixed, percent_of, damaged_percent, mean_deliveries, median_bins],
}


def generate(data: DataConfig) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, eval, select): data.num_train, data.num_eval and data.num_select distinct problems of
    data.difficulty's levels. Eval is drawn first, train next and select last, so neither the eval nor the
    train split depends on the sizes of the splits drawn after it."""
    rng = random.Random(data.seed)
    # Its own stream, so that the problems (and, with tool_solutions=0, the solutions) are those without tools.
    tools_rng = random.Random(f"{data.seed}/tool_solutions")
    wanted = data.num_eval + data.num_train + data.num_select
    seen: set[str] = set()
    problems: list[Problem] = []
    levels: list[int] = []
    # Level 1 alone has about 10^5 distinct questions; give up well before drawing forever.
    for _ in range(20 * wanted):
        if len(problems) == wanted:
            break
        level = rng.choice(data.difficulty)
        problem = rng.choice(LEVELS[level])(rng)
        if problem.question not in seen:
            seen.add(problem.question)
            if problem.calculation and tools_rng.random() < data.tool_solutions:
                problem = calculator_solution(problem)
            problems.append(problem)
            levels.append(level)
    else:
        raise GrpoError(
            f"data.num_train + data.num_eval + data.num_select = {wanted}: more than the distinct problems found at "
            f"levels {data.difficulty}; ask for fewer or add levels (data.difficulty=[1,2,3])"
        )

    def examples(split: str, chunk: slice) -> list[Example]:
        # columns: those `grpo data harbor` writes beside the question, for reward functions that read them.
        return [
            Example(f"harbor-{split}-{i:05d}", p.question, p.answer, p.solution, level,
                    {"id": f"harbor-{split}-{i:05d}", "answer": p.answer, "solution": p.solution})
            for i, (p, level) in enumerate(zip(problems[chunk], levels[chunk]))
        ]

    train_end = data.num_eval + data.num_train
    return examples("train", slice(data.num_eval, train_end)), examples("eval", slice(None, data.num_eval)), examples("select", slice(train_end, None))


def write_jsonl(path: Path, examples: list[Example]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for ex in examples:
            row = {"id": ex.id, "question": ex.question, "answer": ex.answer, "solution": ex.solution}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def data_command(args: argparse.Namespace, config: Config) -> None:
    """`grpo data harbor --out DIR`: DIR/train.jsonl, eval.jsonl and select.jsonl, byte-identical for the same
    config."""
    train, evaluation, select = generate(config.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evaluation)
    write_jsonl(out / "select.jsonl", select)
    print(
        f"wrote {len(train)} train, {len(evaluation)} eval and {len(select)} select problems (levels "
        f"{config.data.difficulty}, seed {config.data.seed}) to {out}/train.jsonl, eval.jsonl and select.jsonl"
    )
