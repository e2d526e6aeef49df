"""A draft source in one file: follow each token's last successor (a bigram cache)."""

from typing import Literal, Sequence

from pydantic import Field

from strategies.base import Candidate, DraftSource, StepOutcome, register


@register("source", "successor")
class SuccessorSource(DraftSource):
    """Remembers, for every token, the token that followed it last; proposes the chain that
    starts at the root. Example: context 3 4 5 3 -> table {3: 4, 4: 5, 5: 3} -> draft (4, 5, 3)."""

    class Params(DraftSource.Params):
        name: Literal["successor"] = "successor"
        max_len: int = Field(4, ge=1, description="longest chain proposed")

    def __init__(self, params, *, config) -> None:
        super().__init__(params, config=config)
        self.next: dict[int, int] = {}

    @classmethod
    def node_cap(cls, params, config) -> int:
        return params.max_len  # bounds the step's size (LookaheadConfig.max_step_tokens)

    def begin(self, prompt: Sequence[int]) -> None:
        super().begin(prompt)  # forgets the estimates unless persist
        self.next = dict(zip(prompt, prompt[1:]))

    def propose(self, context: Sequence[int], max_len: int) -> list[Candidate]:
        chain, token = [], context[-1]
        while len(chain) < min(max_len, self.params.max_len) and token in self.next:
            token = self.next[token]
            chain.append(token)
        # one estimate per depth: the planner ranks this chain against other sources' candidates
        return [self.candidate(chain, keys=range(1, len(chain) + 1))] if chain else []

    def observe(self, outcome: StepOutcome) -> None:
        super().observe(outcome)  # updates the estimates of this source's fed nodes
        tail = outcome.context[-len(outcome.committed) - 1 :]
        self.next.update(zip(tail, tail[1:]))
