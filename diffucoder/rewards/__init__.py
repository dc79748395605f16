"""Rewards for coupled-GRPO: code correctness (in the sandbox) and format. See ``diffucoder.rewards.code``.

    from diffucoder.rewards import code_reward, code_format_reward, CODE_WEIGHT, FORMAT_WEIGHT
    r = [CODE_WEIGHT * c + FORMAT_WEIGHT * f for c, f in
         zip(code_reward(completions, test_cases=tests), code_format_reward(completions))]
"""

from diffucoder.rewards.code import (
    CODE_WEIGHT,
    FORMAT_WEIGHT,
    TEST_TIMEOUT_S,
    code_format_reward,
    code_reward,
    code_scores,
    combined_code_reward,
    completion_text,
    extract_code,
    format_score,
)

__all__ = [
    "CODE_WEIGHT",
    "FORMAT_WEIGHT",
    "TEST_TIMEOUT_S",
    "code_format_reward",
    "code_reward",
    "code_scores",
    "combined_code_reward",
    "completion_text",
    "extract_code",
    "format_score",
]
