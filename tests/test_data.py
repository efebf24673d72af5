"""Fast tests of the executor's data, objectives math, LR schedule mapping and checkpoint markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

from scaleplan.executor import checkpoints as ckpt  # noqa: E402
from scaleplan.executor import objectives as obj  # noqa: E402
from scaleplan.executor.data import tasks  # noqa: E402
from scaleplan.executor.data.corpus import documents  # noqa: E402
from scaleplan.executor.data.packing import MixedData, PackedSource, token_stream  # noqa: E402
from scaleplan.executor.data.tokenizer import EOS, load_or_train, special_ids  # noqa: E402
from scaleplan.specs.errors import SpecError  # noqa: E402


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_or_train(tmp_path_factory.mktemp("tok"), 512)


def test_corpora_are_real_offline_text() -> None:
    web = documents("web", max_bytes=50_000)
    hq = documents("hq", max_bytes=50_000)
    assert sum(map(len, web)) >= 50_000 and sum(map(len, hq)) >= 50_000
    assert any("def " in d for d in web)  # source code
    assert not any(d.lstrip().startswith(("import ", "def ", "class ")) for d in hq)  # prose only
    with pytest.raises(SpecError, match="unknown data source"):
        documents("nope")


def test_tokenizer_has_the_plan_vocab_and_round_trips(tok) -> None:  # type: ignore[no-untyped-def]
    assert tok.get_vocab_size() == 512
    eos, pad = special_ids(tok)
    assert eos != pad and tok.token_to_id(EOS) == eos
    text = "def f(x):\n    return x + 1  # ünïcode"
    assert tok.decode(tok.encode(text).ids) == text


def test_packing_is_deterministic_resumable_and_mixed(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    web = PackedSource("web", token_stream(tok, tmp_path, "web", None), 32)
    hq = PackedSource("hq", token_stream(tok, tmp_path, "hq", None), 32)
    assert web.num_train > 100 and 1 <= web.num_eval <= 16
    mix = MixedData([(web, 0.25), (hq, 0.75)], seed=3)
    a = mix.samples(range(0, 200))
    b = MixedData([(web, 0.25), (hq, 0.75)], seed=3).samples(range(100, 200))  # "resumed" at 100
    assert a.shape == (200, 33)
    np.testing.assert_array_equal(a[100:], b)
    assert not np.array_equal(a, MixedData([(web, 0.25), (hq, 0.75)], seed=4).samples(range(200)))
    # the mix follows the weights: count samples that are hq windows
    hq_rows = {hq.window(k).tobytes() for k in range(hq.num_train)}
    share = np.mean([row.astype(np.int32).tobytes() in hq_rows for row in mix.samples(range(400))])
    assert 0.65 < share < 0.85
    # eval windows are never trained on
    train_rows = {web.window(k).tobytes() for k in range(web.num_train)}
    assert not any(w.tobytes() in train_rows for w in web.eval_windows())


def test_global_batch_order_does_not_depend_on_dp() -> None:
    one = [i for m in range(4) for i in obj.sample_indices(16, m, 0, 1, 2)]
    two = sorted(i for r in range(2) for m in range(2) for i in obj.sample_indices(16, m, r, 2, 2))
    assert sorted(one) == two == list(range(16, 24))


def test_tasks_split_rewards_and_corruption() -> None:
    kinds = tasks.kind_weights([("sft", 1.0)])
    assert set(kinds) == set(tasks.KINDS)
    train = {tasks.task(i, 0, kinds=kinds).prompt for i in range(300)}
    held = {tasks.task(i, 0, held_out=True, kinds=kinds).prompt for i in range(100)}
    assert not train & held
    rng = np.random.default_rng(0)
    for i in range(50):
        t = tasks.task(i, 1, kinds=kinds)
        assert tasks.reward(t, t.answer + "  ") == 1.0
        assert tasks.reward(t, tasks.corrupt(t, rng)) == 0.0
    only = tasks.kind_weights([("first", 2.0), ("add", 1.0)])
    assert only == {"first": 2.0, "add": 1.0}
    with pytest.raises(ValueError, match="unknown task source"):
        tasks.kind_weights([("web", 1.0)])


def test_sft_mask_covers_exactly_the_response(tok) -> None:  # type: ignore[no-untyped-def]
    eos, _ = special_ids(tok)
    b = obj.response_microbatch(tok, [("first 3 4 =", " 3")], 16)
    n_prompt, n_resp = len(tok.encode("first 3 4 =").ids), len(tok.encode(" 3").ids)
    masked_labels = b.labels[0][b.loss_mask[0] > 0].tolist()
    assert masked_labels == tok.encode(" 3").ids + [eos]
    assert int(b.loss_mask.sum()) == n_resp + 1
    assert b.tokens[0, :n_prompt].tolist() == tok.encode("first 3 4 =").ids


def test_dpo_loss_and_margin_math() -> None:
    b = obj.MicroBatch(
        torch.zeros(2, 3, dtype=torch.long),
        torch.zeros(2, 3, dtype=torch.long),
        torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]),
    )
    b.extra["ref_logp"] = torch.tensor([-2.0, -2.0])
    per_token = torch.tensor([[9.0, 0.5, 0.5], [9.0, 1.5, 1.5]])  # chosen logp -1, rejected -3
    loss, n, rep = obj.dpo_loss(0.1, b, per_token)
    margin = 0.1 * ((-1 + 2) - (-3 + 2))
    assert int(n) == 1
    assert float(rep["reward_margin"][0]) == pytest.approx(margin)
    assert float(loss) == pytest.approx(-np.log(1 / (1 + np.exp(-margin))), rel=1e-6)


def test_grpo_advantages_and_loss_gradient_sign() -> None:
    adv = obj.group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4)
    assert adv[0] > 0 > adv[1] and torch.allclose(adv[4:], torch.zeros(4))
    per_token = torch.full((2, 3), 1.0, requires_grad=True)
    b = obj.MicroBatch(
        torch.zeros(2, 3, dtype=torch.long),
        torch.zeros(2, 3, dtype=torch.long),
        torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]),
    )
    b.extra.update(
        advantages=torch.tensor([1.0, -1.0]),
        rewards=torch.tensor([1.0, 0.0]),
        ref_logp_tokens=torch.full((2, 3), -1.0),
    )
    loss, n, rep = obj.grpo_loss(0.2, 0.0, b, per_token)
    loss.backward()
    # positive advantage: lower the per-token loss (raise logp); negative: the opposite
    assert per_token.grad[0, 1] > 0 > per_token.grad[1, 1] and per_token.grad[0, 0] == 0
    assert float(rep["kl"][0]) == pytest.approx(0.0, abs=1e-6)


def test_checkpoint_markers_are_atomic(tmp_path: Path) -> None:
    assert ckpt.latest(tmp_path, "pretrain") is None
    (ckpt.prepare_tmp(tmp_path, "pretrain", 10) / "x").write_text("a")
    assert ckpt.latest(tmp_path, "pretrain") is None  # not committed yet
    ckpt.commit(tmp_path, "pretrain", 10)
    assert ckpt.latest(tmp_path, "pretrain").name == "step_0000010"
    assert ckpt.final(tmp_path, "pretrain") is None
    ckpt.prepare_tmp(tmp_path, "pretrain", 20)  # a crash here leaves only a .tmp folder
    assert ckpt.latest(tmp_path, "pretrain").name == "step_0000010"
    ckpt.prepare_tmp(tmp_path, "pretrain", 20)  # the next save removes the stale one
    ckpt.commit(tmp_path, "pretrain", 20, final=True)
    assert ckpt.final(tmp_path, "pretrain").name == "step_0000020"
    with pytest.raises(SpecError, match="no finished checkpoint"):
        ckpt.require_final(tmp_path, "anneal", "phases.sft.init_from")


def test_stale_torch_extension_build_locks_are_cleared(tmp_path) -> None:
    import os
    import time

    pytest.importorskip("deepspeed")
    from scaleplan.executor.ds_backend import clear_stale_build_locks

    old = tmp_path / "deepspeed_shm_comm" / "lock"
    fresh = tmp_path / "other_op" / "lock"
    for lock in (old, fresh):
        lock.parent.mkdir()
        lock.touch()
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert clear_stale_build_locks(tmp_path) == [old]
    assert not old.exists() and fresh.exists()
