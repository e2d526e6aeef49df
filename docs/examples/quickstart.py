import torch

from framework import LookaheadConfig, LookaheadEngine, lookahead_generate
from framework.models import encode_prompt, load_model

model, tokenizer = load_model()  # the default model, SmolLM2-135M-Instruct, float32, offline
input_ids = encode_prompt(tokenizer, "Name three uses of copper.")  # chat template applied: [1, T]

engine = LookaheadEngine(model, LookaheadConfig(window=4, ngram=4, guess_set=4, pool={"name": "lfu"}))
out = engine.generate(input_ids, max_new_tokens=64)  # greedy: token-identical to model.generate
print(tokenizer.decode(out.sequences[0, input_ids.shape[1]:], skip_special_tokens=True))
print(out.stats.summary())  # steps, new tokens, tokens/step, tokens/s; per step: stats.emitted_per_step

plain = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, max_new_tokens=64)
assert torch.equal(out.sequences, plain)

# the same decoder inside Hugging Face generate (no streaming on this path)
same = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), custom_generate=lookahead_generate,
                      window=4, ngram=4, guess_set=4, do_sample=False, max_new_tokens=64)
assert torch.equal(same, plain)
