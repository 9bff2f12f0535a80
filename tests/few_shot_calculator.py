"""environment.factory=few_shot_calculator:make (test_real_model.py): the calculator, its prompt a conversation
that shows SmolLM2-135M-Instruct the tagged form, a system prompt and two worked turns. Its own small module:
the environment workers import it to unpickle each rollout's environment."""

from grpo_cli.data.prompts import fill_template
from grpo_cli.environment.calculator import CalculatorEnvironment

SYSTEM = "You solve arithmetic with a calculator: write <calculator>expression</calculator>, read the <output>, then give FINAL: <answer>."
SHOTS = [
    ("A shelf holds 5 boxes and 7 more arrive. How many boxes?", "<calculator>5 + 7</calculator>\n<output>12</output>\nFINAL: 12"),
    ("A bin holds 9 bags and 3 are taken. How many bags are left?", "<calculator>9 - 3</calculator>\n<output>6</output>\nFINAL: 6"),
]


class FewShotCalculator(CalculatorEnvironment):
    def reset(self, example):
        messages = [{"role": "system", "content": SYSTEM}]
        for question, answer in SHOTS:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return messages + [{"role": "user", "content": fill_template(example, self.data)}]


def make(config, tool_format):
    return FewShotCalculator(config, tool_format)
