# ruff: noqa: E501, W291  (the prompts are kept line for line, trailing spaces included, as s1 wrote them)
"""s1's LLM-judge prompts, as its harness sent them (simplescaling/s1@77272c6).

- `MATH_INDEX`: eval/lm-evaluation-harness/lm_eval/tasks/aime/utils.py:37 (`EXTRACTION_TEMPLATE_IDX`, also in
  openai_math/utils.py): the judge returns the 1-based index of the option the attempt equals, or -1.
- `CHOICE_LETTER`: eval/lm-evaluation-harness/lm_eval/tasks/gpqa/openai/utils.py:36 (`EXTRACTION_TEMPLATE`):
  the judge returns the letter the attempt picked, or -1.
- `CHOICE_QUESTION`: gpqa/openai/utils.py:13 (`QUERY_TEMPLATE_API`): how the question is shown to the judge.

They are data, kept byte for byte (tests/test_judge.py compares them with the source where it is present):
a grader that claims s1's judge must send s1's words. Both are filled with `%` and the keys
`expression1` and `expression2`.
"""

MATH_INDEX = r"""Look at the following attempt by a student and extract the student's answer. If it is equivalent (ignoring trivial simplifications) to any of the provided options, return the index of that option starting from 1. Else, return -1.

Examples:

    Options: ['2x+4', '2x', '4x']
    Attempt: The answer is 3+2x.

-1
(the student's answer is not among the options)

    Options: ['72,000']
    Attempt: 72000 \text{ cents}.

1
(always give benefit of the doubt to units and ignore formatting which makes the 1st option match)

    Options: ['2/(-3)', '2/3']
    Attempt: -1 * 2/3

1
(the 1st option matches after trivial simplifications which are fine)

    Options: ['x=5']
    Attempt: 5

1

    Options: ['\dfrac{33}{100}']
    Attempt: 0.33

1

    Options: ['75^\circ']
    Attempt: ...various calculations and explanations...hence the answer is $\boxed{x in 75}$.

1

    Options: ['(1,-3)', '(1,-1)', '(1,0)', '(1,-2)']
    Attempt: -2, 1

4
(ignore whitespace and other formatting which makes the 4th option match)

    Options: ['-2,1']
    Attempt: 1, -2

1
(likely a problem where multiple solutions are possible thus ignore order)

    Options: ['11', '100', '50', '-5', '12', '10']
    Attempt: ...$\boxed{12^{\mathrm{th}}}$.

5

    Options: ['2516_8']
    Attempt: 2516

1
(give benefit of the doubt for different bases)

    Options: ['11\sqrt2']
    Attempt: 11\sqrt{2}

1

    Options: ['11,\! 111,\! 111,\! 100']
    Attempt: 11111111100

1

    Options: ['\text{Navin}']
    Attempt: ...it is navin.

1

---

YOUR TASK


Respond with only the index of the matching option starting from 1 or -1 if there is absolutely no reasonable match. Do not include a rationale.

    Options: %(expression1)s
    Attempt: %(expression2)s"""

CHOICE_LETTER = r"""Look at the following question and an attempt by a student and extract which choice among A, B, C, D the student picked. If the student did not pick any choice, respond with "-1".

Examples:

    Question: ...
    Attempt: Answer: **A**

A

    Question: A) Dinosaur B) Elephant C) Cat D) Dog
    Attempt: ...The answer is therefore Elephant...

B

    Question: ...
    Attempt: Answer: None of the above

-1

    Question: ...
    Attempt: ...Answer: D), because...

D

    Question: ...
(A) 7 
(B) 8 
(C) 4 
(D) 10
    Attempt: 4

C

    Question: ...
    Attempt: ...\\boxed{C}...

C

---

YOUR TASK


Respond only with the capitalized alphabetic letter (without quotes) or -1. Do not include a rationale.

    Question: %(expression1)s
    Attempt: %(expression2)s"""

CHOICE_QUESTION = """{Question}
Answer Choices:
(A) {choice1}
(B) {choice2}
(C) {choice3}
(D) {choice4}"""
