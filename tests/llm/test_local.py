"""Mechanics of the local backend on a tiny random Llama (float32, seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from persona_shoppers.llm.local.attention import sdpa_gqa
from persona_shoppers.llm.local.batching import by_length
from persona_shoppers.llm.local.kv_cache import PreallocatedLayer
from persona_shoppers.llm.local.trie import TokenTrie


def _naive_logprob(llm, prompt, candidate: str) -> float:
    """Full-vocabulary logits at every position of prompt + candidate, one sequence."""
    prefix = llm.render(prompt)
    prefix_ids = llm.encode(prefix)
    cand = llm._candidate_ids(prefix, prefix_ids, candidate)
    ids = torch.tensor([prefix_ids + cand])
    with torch.no_grad():
        logp = torch.log_softmax(llm.model(ids).logits[0].float(), dim=-1)
    start = len(prefix_ids) - 1
    return float(sum(logp[start + k, t] for k, t in enumerate(cand)))


def test_choose_matches_naive_full_logits(tiny_llm, prompts):
    candidates = [
        ["yes", "yes please", "no", "maybe later"],  # one candidate starts another
        ['"low"', '"medium"', '"high"', '"very high indeed"'],
        ["A", "B"],
        ["running shoes", "running shorts", "a red skirt", "x", "linen shirt and white sneakers"],
        ["1", "22", "333"],
    ]
    choices = tiny_llm.choose(prompts, candidates)
    for prompt, cands, choice in zip(prompts, candidates, choices, strict=True):
        naive = [_naive_logprob(tiny_llm, prompt, c) for c in cands]
        assert choice.logprobs == pytest.approx(naive, abs=1e-3)
        assert choice.index == max(range(len(naive)), key=naive.__getitem__)
        assert choice.text == cands[choice.index]
        assert sum(choice.probs) == pytest.approx(1.0)
        lengths = [
            len(
                tiny_llm._candidate_ids(
                    tiny_llm.render(prompt), tiny_llm.encode(tiny_llm.render(prompt)), c
                )
            )
            for c in cands
        ]
        assert choice.mean_logprobs == pytest.approx(
            [t / n for t, n in zip(naive, lengths, strict=True)], abs=1e-3
        )
    normalized = tiny_llm.choose(prompts, candidates, normalize=True)
    for choice in normalized:
        assert choice.index == max(
            range(len(choice.mean_logprobs)), key=choice.mean_logprobs.__getitem__
        )


def test_choose_chunks_candidates_under_a_small_token_budget(tiny_llm, prompts):
    candidates = [[f"option {k}" for k in range(7)] for _ in prompts]
    full = tiny_llm.choose(prompts, candidates)
    budget, tiny_llm.token_budget = tiny_llm.token_budget, 64  # one pair per chunk
    try:
        chunked = tiny_llm.choose(prompts, candidates)
    finally:
        tiny_llm.token_budget = budget
    for a, b in zip(full, chunked, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_choose_rejects_empty_candidates(tiny_llm, prompts):
    with pytest.raises(ValueError, match="non-empty"):
        tiny_llm.choose(prompts[:1], [["a", ""]])
    with pytest.raises(ValueError, match="no candidates"):
        tiny_llm.choose(prompts[:1], [[]])


def test_perplexity_is_exp_mean_nll(tiny_llm):
    texts = ["red summer dress", "a", "Running shoes for trail running, size 42, waterproof.", ""]
    values = tiny_llm.perplexity(texts)
    for text, value in zip(texts, values, strict=True):
        ids = [tiny_llm.text_start_id] + tiny_llm.encode(text)
        if len(ids) < 2:
            assert math.isnan(value)
            continue
        with torch.no_grad():
            logp = torch.log_softmax(tiny_llm.model(torch.tensor([ids])).logits[0].float(), -1)
        nll = -torch.stack([logp[t, ids[t + 1]] for t in range(len(ids) - 1)]).mean()
        assert value == pytest.approx(float(torch.exp(nll)), rel=1e-4)


def test_batched_generate_equals_one_by_one(tiny_llm, prompts):
    batched = tiny_llm.generate(prompts, max_new_tokens=12)
    single = [tiny_llm.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert any(text for text in batched)


def test_greedy_generate_matches_transformers_generate(tiny_llm, prompts):
    ids = torch.tensor([tiny_llm.encode(tiny_llm.render(prompts[1]))])
    with torch.no_grad():
        out = tiny_llm.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=tiny_llm.end_ids,
            pad_token_id=tiny_llm.pad_id,
        )
    expected = tiny_llm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert tiny_llm.generate([prompts[1]], max_new_tokens=10)[0] == expected


def test_stop_strings_cut_the_answer(tiny_llm, prompts):
    free = tiny_llm.generate(prompts, max_new_tokens=16)
    # Stop at the first character each answer produced after its first one.
    for prompt, text in zip(prompts, free, strict=True):
        if len(text) < 3:
            continue
        stop = text[2]
        cut = tiny_llm.generate([prompt], max_new_tokens=16, stop=[stop])[0]
        assert stop not in cut
        assert text.startswith(cut)


def test_sampling_is_seeded_and_batch_independent(tiny_llm, prompts):
    a = tiny_llm.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3)
    b = tiny_llm.generate(prompts, max_new_tokens=8, temperature=1.0, seed=3)
    c = tiny_llm.generate(prompts[::-1], max_new_tokens=8, temperature=1.0, seed=3)[::-1]
    d = tiny_llm.generate(prompts, max_new_tokens=8, temperature=1.0, seed=4)
    assert a == b == c
    assert a != d


def test_number_constrained_generation_only_emits_digits(tiny_llm, prompts):
    prefixes = [tiny_llm.render(p) + '{"age": ' for p in prompts]
    out = tiny_llm.generate_texts(prefixes, 6, stop=[",", "}", " ", "\n"], allowed="number")
    for text in out:
        assert set(text) <= set("0123456789-.")


def test_prompt_validation(tiny_llm):
    with pytest.raises(TypeError):
        tiny_llm.generate("hello")
    with pytest.raises(ValueError, match="role"):
        tiny_llm.generate([[{"role": "bot", "content": "x"}]])
    with pytest.raises(ValueError, match="max_length"):
        tiny_llm.generate([[{"role": "user", "content": "word " * 1200}]])


def test_identity(tiny_llm, tiny_model_dir):
    assert tiny_llm.name == f"local:{tiny_model_dir.name}"
    assert tiny_llm.cache_key_prefix.endswith(":float32")
    assert str(tiny_model_dir.resolve()) in tiny_llm.cache_key_prefix


def test_batches_group_by_length_within_budget():
    batches = by_length([5, 100, 7, 98, 6, 3], batch_size=2, token_budget=150)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [1]  # 2 x 100 > 150
    assert all(len(b) <= 2 for b in batches)


def test_batches_trade_padding_against_the_cost_of_a_pass():
    lengths = [5, 100, 7, 98, 6, 3]
    # No fixed cost per pass: as few passes as the bounds allow, longest rows first.
    assert by_length(lengths, batch_size=8, token_budget=10_000) == [[1, 3, 2, 4, 0, 5]]
    # A pass costs 20 padded tokens: [100, 98] + [7, 6, 5, 3] = 200 + 28 + 2 x 20 = 268 beats
    # one pass (600 + 20) and [100] + [98] + [7, 6, 5, 3] (100 + 98 + 28 + 3 x 20 = 286).
    assert by_length(lengths, 8, 10_000, forward_cost=20) == [[1, 3], [2, 4, 0, 5]]
    # Free passes: no padding at all.
    assert by_length(lengths, 8, 10_000, forward_cost=0) == [[1], [3], [2], [4], [0], [5]]


def test_prompt_kv_cache_gives_the_same_scores_and_texts(tiny_llm, prompts):
    prefixes = [tiny_llm.render(p) for p in prompts]
    # Rows with a cached prefix and a tail, an empty tail, and no cached prefix at all.
    inputs = [prefixes[0] + '{"a": ', prefixes[1], prefixes[2] + '{"level', prefixes[3] + "{"]
    candidates = [['"x"', "12"], ["yes", "no"], ['": "low"', '": "high"'], ['"', "}"]]
    plain_scores = tiny_llm.score_texts(inputs, candidates)
    plain_texts = tiny_llm.generate_texts(inputs, 6)
    tiny_llm.prefill(prefixes[:3])
    try:
        assert len(tiny_llm.prefix_cache) == 3
        cached_scores = tiny_llm.score_texts(inputs, candidates)
        cached_texts = tiny_llm.generate_texts(inputs, 6)
    finally:
        tiny_llm.release()
    assert not tiny_llm.prefix_cache and tiny_llm.prefix_cache.bytes == 0
    for (a, _), (b, _) in zip(plain_scores, cached_scores, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert plain_texts == cached_texts


def test_a_prefix_built_on_a_cached_prefix_scores_like_a_fresh_one(tiny_llm, prompts):
    base = tiny_llm.render(prompts[1])
    longer = [base + "Step 1: searched", base + "Step 1: viewed p1"]
    candidates = [["yes", "no"], ["yes", "no"]]
    plain = tiny_llm.score_texts([t + " then" for t in longer], candidates)
    tiny_llm.prefill([base])
    try:
        tiny_llm.prefill(longer)  # only the new tokens run, on top of the cached base
        assert len(tiny_llm.prefix_cache) == 3
        keys = sorted(tiny_llm.prefix_cache.entries, key=len)
        for key in keys[1:]:
            layers, _ = tiny_llm.prefix_cache[key]
            assert layers[0][0].shape[1] == len(key)  # contiguous KV of the whole prefix
        cached = tiny_llm.score_texts([t + " then" for t in longer], candidates)
    finally:
        tiny_llm.release()
    for (a, _), (b, _) in zip(plain, cached, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_prefixes_of_one_call_are_cut_from_the_longest_one(tiny_llm, prompts):
    base = tiny_llm.render(prompts[1])
    chain = [base, base + "Step 1: searched", base + "Step 1: searched\nPage: shoes"]
    other = tiny_llm.render(prompts[2])
    for prefix in [*chain, other]:  # one at a time: every prefix runs
        tiny_llm.prefill([prefix])
    apart = dict(tiny_llm.prefix_cache.entries)
    tiny_llm.release()
    passes = []
    forward = tiny_llm._forward
    tiny_llm._forward = lambda ids, *a, **k: passes.append(ids.shape) or forward(ids, *a, **k)
    try:
        tiny_llm.prefill([*chain, other])
        together = dict(tiny_llm.prefix_cache.entries)
    finally:
        del tiny_llm._forward
        tiny_llm.release()
    assert sorted(together, key=len) == sorted(apart, key=len)
    # the chain runs as its longest prefix only: one row per independent prefix
    assert sum(shape[0] for shape in passes) == 2
    for key, (layers, last) in apart.items():
        joint_layers, joint_last = together[key]
        assert joint_layers[0][0].shape == layers[0][0].shape
        for (k, v), (jk, jv) in zip(layers, joint_layers, strict=True):
            assert torch.allclose(k, jk, atol=1e-5) and torch.allclose(v, jv, atol=1e-5)
        assert torch.allclose(last, joint_last, atol=1e-5)


def test_a_kv_cache_layer_fills_its_room_in_place_then_grows():
    keys, values = torch.zeros(2, 1, 4, 3), torch.zeros(2, 1, 4, 3)
    layer = PreallocatedLayer(keys, values, filled=1)
    new = torch.ones(2, 1, 2, 3)
    k, _ = layer.update(new, new)
    assert layer.get_seq_length() == 3 and k.shape == (2, 1, 3, 3)
    assert k.data_ptr() == keys.data_ptr()  # a view of the buffer: nothing copied
    k, v = layer.update(2 * new, 3 * new)  # past the room of 4: the buffer grows
    assert layer.get_seq_length() == 5 and layer.get_mask_sizes(1) == (6, 0)
    assert k[0, 0, :, 0].tolist() == [0, 1, 1, 2, 2] and v[0, 0, -1, 0] == 3


def test_grouped_query_attention_under_a_mask_matches_transformers():
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True, training=False)
    query, key, value = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    mask = torch.rand(2, 1, 5, 7) > 0.3
    mask[..., 0] = True  # every query sees a key
    ours, _ = sdpa_gqa(module, query, key, value, mask, scaling=0.5)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.5)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_prompt_kv_cache_is_bounded(tiny_llm, prompts):
    limit, tiny_llm.prefix_cache_mb = tiny_llm.prefix_cache_mb, 0.01
    try:
        tiny_llm.prefill([tiny_llm.render(p) for p in prompts])
        assert tiny_llm.prefix_cache.bytes <= 0.01 * 2**20
    finally:
        tiny_llm.prefix_cache_mb = limit
        tiny_llm.release()


def test_generate_json_with_and_without_the_prompt_cache(tiny_llm, prompts):
    schema = {
        "type": "object",
        "properties": {
            "why": {"type": "string", "maxLength": 30},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}},
            "n": {"type": "integer"},
        },
        "required": ["why", "tags", "n"],
    }
    with_cache = tiny_llm.generate_json(prompts, schema, max_new_tokens_per_field=5)
    limit, tiny_llm.prefix_cache_mb = tiny_llm.prefix_cache_mb, 0
    try:
        without = tiny_llm.generate_json(prompts, schema, max_new_tokens_per_field=5)
    finally:
        tiny_llm.prefix_cache_mb = limit
    assert [r.raw for r in with_cache] == [r.raw for r in without]
    assert not tiny_llm.prefix_cache


def test_candidates_sharing_a_start_are_fed_once():
    trie = TokenTrie([[5, 6, 7], [5, 6, 8], [5], [9]])
    assert trie.tokens == [5, 6, 7, 8, 9]
    assert trie.depths == [0, 1, 2, 2, 0]
    assert trie.paths == [[0, 1, 2], [0, 1, 3], [0], [4]]
    seen = trie.ancestry()
    assert seen[3].nonzero().flatten().tolist() == [0, 1, 3]  # itself and its ancestors only
    assert seen[4].nonzero().flatten().tolist() == [4]


def test_guided_logprobs_against_hand_computed_values():
    from persona_shoppers.llm.local.backend import guided_logprobs

    conditional = torch.log(torch.tensor([[0.5, 0.5]])) + 3.0  # logits: any offset
    contrast = torch.log(torch.tensor([[0.9, 0.1]]))
    # 2 log 0.5 - log 0.9 and 2 log 0.5 - log 0.1
    expected = torch.tensor([[-1.280934, 0.916291]])
    assert torch.allclose(guided_logprobs(conditional, contrast, 2.0), expected, atol=1e-5)
    assert torch.allclose(
        guided_logprobs(conditional, contrast, 1.0), torch.log(torch.tensor([[0.5, 0.5]]))
    )


def _naive_guided(llm, prompt, contrast, guidance: float, steps: int) -> str:
    """Greedy guided decoding by full forward passes of both inputs at every step."""
    from persona_shoppers.llm.local.backend import guided_logprobs

    ids, other, out = llm.encode(llm.render(prompt)), llm.encode(llm.render(contrast)), []
    for _ in range(steps):
        with torch.no_grad():
            a = llm.model(torch.tensor([ids + out])).logits[0, -1].float()
            b = llm.model(torch.tensor([other + out])).logits[0, -1].float()
        token = int(guided_logprobs(a, b, guidance).argmax())
        if token in llm.end_ids:
            break
        out.append(token)
    return llm.tokenizer.decode(out, skip_special_tokens=True)


def test_guided_generation_matches_naive_guided_decoding(tiny_llm, prompts):
    contrasts = prompts[1:] + prompts[:1]
    guided = tiny_llm.generate(prompts, 8, contrast=contrasts, guidance=2.5)
    for prompt, contrast, text in zip(prompts, contrasts, guided, strict=True):
        assert text == _naive_guided(tiny_llm, prompt, contrast, 2.5, 8)
    assert guided != tiny_llm.generate(prompts, 8)  # the contrast changed some answer
    # a prompt as its own contrast, or guidance 1, is plain decoding
    assert tiny_llm.generate(prompts, 8, contrast=prompts, guidance=3.0) == tiny_llm.generate(
        prompts, 8
    )
    assert tiny_llm.generate(prompts, 8, contrast=contrasts, guidance=1.0) == tiny_llm.generate(
        prompts, 8
    )
