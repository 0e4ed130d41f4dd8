import numpy as np
import torch

from avbench.train import augment, sampling


def test_mixup_label_arithmetic_matches_the_reference():
    labels = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.uint8)
    audio = torch.arange(3.0)[:, None, None].expand(3, 2, 5).clone()
    video = 10 + torch.arange(3.0)[:, None, None].expand(3, 2, 3).clone()
    rng = np.random.default_rng(1)
    a, v, targets, partner, lam = augment.mixup(audio, video, labels, prob=1.0, alpha=10.0, smoothing=0.1, rng=rng)
    for i in range(3):
        p, l = int(partner[i]), float(lam[i])
        expect = np.full(4, 0.1 / 4)
        expect += 0.9 * l * labels[i].numpy() + 0.9 * (1 - l) * labels[p].numpy()
        np.testing.assert_allclose(targets[i].numpy(), expect, atol=1e-6)
        # The same lambda mixes both modalities.
        np.testing.assert_allclose(a[i].numpy(), l * i + (1 - l) * p, atol=1e-5)
        np.testing.assert_allclose(v[i].numpy(), l * (10 + i) + (1 - l) * (10 + p), atol=1e-5)
    assert torch.allclose(targets.sum(1), torch.ones(3))
    assert ((lam > 0.2) & (lam < 0.8)).all()  # Beta(10, 10) concentrates around 0.5


def test_mixup_probability_zero_is_plain_label_smoothing():
    labels = torch.eye(3, dtype=torch.uint8)
    x = torch.randn(3, 2, 4)
    a, _, targets, _, lam = augment.mixup(x, None, labels, prob=0.0, alpha=10.0, smoothing=0.1,
                                          rng=np.random.default_rng(0))
    assert torch.equal(a, x) and (lam == 1).all()
    np.testing.assert_allclose(targets.numpy(), np.eye(3) * 0.9 + 0.1 / 3, atol=1e-6)


def test_balanced_weights_sum_inverse_class_frequency():
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [1, 1]])
    w = sampling.balanced_weights(labels)
    wa, wb = 1000 / (4 + 0.01), 1000 / (2 + 0.01)
    np.testing.assert_allclose(w, [wa, wa, wa, wb, wa + wb])
    # Drawn with replacement in proportion to the weights.
    order = np.concatenate([sampling.epoch_order(5, e, 0, w) for e in range(400)])
    freq = np.bincount(order, minlength=5) / len(order)
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.02)


def test_epoch_order_is_seeded_and_batches_split_across_ranks():
    a = sampling.epoch_order(20, 3, 7, None)
    assert np.array_equal(a, sampling.epoch_order(20, 3, 7, None))
    assert not np.array_equal(a, sampling.epoch_order(20, 4, 7, None))
    assert sorted(a) == list(range(20))
    one = sampling.batches(a, 6, drop_last=True)
    assert [len(b) for b in one] == [6, 6, 6]
    two = [sampling.batches(a, 6, True, rank=r, world=2) for r in range(2)]
    for g, (r0, r1) in enumerate(zip(*two)):
        assert np.array_equal(np.concatenate([r0, r1]), one[g])


def test_time_roll_is_shared_by_audio_video_and_onsets():
    audio = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1).expand(2, 6, 3)
    video = -torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1).expand(2, 6, 2)
    onsets = torch.zeros(2, 6, dtype=torch.bool)
    onsets[:, 0] = True
    shift = torch.tensor([2, -1])
    a, v, o = augment.time_roll(shift, audio, video, onsets)
    for i in range(2):
        s = int(shift[i])
        assert torch.equal(a[i], torch.roll(audio[i], s, dims=0))
        assert torch.equal(v[i], torch.roll(video[i], s, dims=0))
        assert o[i].nonzero().item() == s % 6
    shifts = augment.random_shifts(10000, 30, np.random.default_rng(0))
    assert shifts.min() == -15 and shifts.max() == 14
