import pytest
import torch
from kedro.io import DatasetError

from persona_shoppers.datasets import HuggingFaceModelDataset
from persona_shoppers.sft.tokens import find_persona_tokens, is_tied

PROMPT = [
    {"role": "system", "content": "You shop."},
    {"role": "user", "content": "Buyer profile: <|persona_3|>\nGoal: You want shoes. Next?"},
]


def test_save_then_load_gives_identical_logits_and_tokens(persona_model, tmp_path):
    model, tokenizer, persona = persona_model
    model.eval()
    dataset = HuggingFaceModelDataset(filepath=str(tmp_path / "sft_model"))
    assert not dataset.exists()
    dataset.save((model, tokenizer))
    dataset.save((model, tokenizer))  # over an existing folder
    assert dataset.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft_model"]  # no temporary left

    loaded, loaded_tokenizer = dataset.load()
    text = loaded_tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([loaded_tokenizer(text, add_special_tokens=False)["input_ids"]])
    assert (ids == persona.first + 3).sum() == 1
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert is_tied(loaded)
    assert find_persona_tokens(loaded_tokenizer) == persona
    assert loaded_tokenizer.chat_template == tokenizer.chat_template


def test_load_args_and_missing_folder(persona_model, tmp_path):
    model, tokenizer, _ = persona_model
    dataset = HuggingFaceModelDataset(str(tmp_path / "m"), load_args={"dtype": "bfloat16"})
    with pytest.raises(DatasetError, match="no Hugging Face model"):
        dataset.load()
    dataset.save((model, tokenizer))
    assert dataset.load().model.dtype == torch.bfloat16
    with pytest.raises(DatasetError, match="pair"):
        dataset.save(model)


def test_local_llm_loads_the_saved_model(persona_model, tmp_path):
    from persona_shoppers.llm.local import LocalLLM

    model, tokenizer, persona = persona_model
    HuggingFaceModelDataset(str(tmp_path / "sft_model")).save((model, tokenizer))
    llm = LocalLLM(tmp_path / "sft_model", dtype="float32")

    assert llm.encode(llm.render(PROMPT)).count(persona.first + 3) == 1
    choice = llm.choose([PROMPT], [["view", "add_to_cart"]])[0]
    assert choice.text in ("view", "add_to_cart") and len(choice.logprobs) == 2
    assert isinstance(llm.generate([PROMPT], max_new_tokens=4)[0], str)
