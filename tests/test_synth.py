import numpy as np
import pytest

from avbench.cache import FeatureCache
from avbench.cache.verify import verify_cache
from avbench.datasets.synth import EVENT_TYPES, SynthCard, SynthKnobs, build_synth_cache, parse_event_mix
from avbench.errors import UserError
from helpers import TINY


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = FeatureCache(build_synth_cache(tmp_path / "a", SynthKnobs(**TINY)))
    b = FeatureCache(build_synth_cache(tmp_path / "b", SynthKnobs(**TINY)))
    c = FeatureCache(build_synth_cache(tmp_path / "c", SynthKnobs(**{**TINY, "seed": 1})))
    for split in ("train", "test"):
        sa, sb, sc = a.split(split), b.split(split), c.split(split)
        np.testing.assert_array_equal(np.asarray(sa.audio), np.asarray(sb.audio))
        np.testing.assert_array_equal(sa.labels, sb.labels)
        np.testing.assert_array_equal(sa.extras["event_type"], sb.extras["event_type"])
        assert not np.array_equal(np.asarray(sa.audio), np.asarray(sc.audio))
    assert a.manifest.key == b.manifest.key != c.manifest.key
    assert verify_cache(a.root) == []


def _evidence(split, world_proto, cls, modality):
    """Projection of each step onto the clip's own class prototype."""
    x = np.asarray(getattr(split, modality), dtype=np.float64)
    return np.einsum("ntd,nd->nt", x, world_proto[cls])


def test_event_types_place_evidence_where_the_taxonomy_says(tmp_path):
    from avbench.datasets.synth import _World

    k = SynthKnobs(classes=6, train_clips=400, test_clips=10, steps=30, audio_dim=64, video_dim=48,
                   snr=2.0, distractor=0.0)
    s = FeatureCache(build_synth_cache(tmp_path / "s", k)).split("train")
    world = _World(k)
    cls = s.labels.argmax(1)
    ea = _evidence(s, world.proto_a, cls, "audio")
    ev = _evidence(s, world.proto_v, cls, "video")
    et = s.extras["event_type"]
    by = {name: et == i for i, name in enumerate(EVENT_TYPES)}
    assert all(m.sum() > 40 for m in by.values())  # the default mix draws every type
    hi = 1.0  # evidence adds snr=2 to the projection; noise projections are ~N(0, small) + offsets
    # Continuous: every step in both; audio-only: audio everywhere, video nowhere; visual-only: mirrored.
    assert (ea[by["continuous"]] > hi).mean() > 0.95 and (ev[by["continuous"]] > hi).mean() > 0.95
    assert (ea[by["audio_only"]] > hi).mean() > 0.95 and (ev[by["audio_only"]] > hi).mean() < 0.05
    assert (ev[by["visual_only"]] > hi).mean() > 0.95 and (ea[by["visual_only"]] > hi).mean() < 0.05
    # Instant: a 3-step window (10% of 30), the same steps in both modalities.
    inst_a, inst_v = ea[by["instant"]] > hi, ev[by["instant"]] > hi
    assert np.all(inst_a.sum(1) == 3) and np.array_equal(inst_a, inst_v)
    # Rhythmic: evidence exactly at the marked onsets; only rhythmic clips have onsets.
    rh = by["rhythmic"]
    np.testing.assert_array_equal(ea[rh] > hi, s.onsets[rh])
    assert s.onsets[rh].any(1).all() and not s.onsets[~rh].any()


def test_modalities_come_from_different_distributions(tmp_path):
    s = FeatureCache(build_synth_cache(tmp_path / "s", SynthKnobs(**{**TINY, "video_dim": 16}))).split("train")
    a = np.asarray(s.audio, dtype=np.float64).reshape(-1, 16)
    v = np.asarray(s.video, dtype=np.float64).reshape(-1, 16)
    # The per-modality offsets separate the means by far more than the per-step noise.
    assert np.linalg.norm(a.mean(0) - v.mean(0)) > 0.5


def test_secondary_labels_make_a_multilabel_cache(tmp_path):
    c = FeatureCache(build_synth_cache(tmp_path / "m", SynthKnobs(**{**TINY, "secondary_rate": 0.5})))
    s = c.split("train")
    assert c.manifest.task == "multilabel" and c.task.multilabel
    two = s.labels.sum(1) == 2
    assert 0.3 < two.mean() < 0.7 and (s.labels.sum(1) >= 1).all()
    assert (s.extras["event_type2"][two] >= 0).all() and (s.extras["event_type2"][~two] == -1).all()


def test_event_mix_and_knob_errors():
    np.testing.assert_allclose(parse_event_mix("instant"), [0, 1, 0, 0, 0])
    np.testing.assert_allclose(parse_event_mix("continuous:3,audio-only:1"), [0.75, 0, 0, 0.25, 0])
    with pytest.raises(UserError, match="unknown event type 'loud'"):
        parse_event_mix("loud")
    with pytest.raises(UserError, match="classes must be at least 2"):
        build_synth_cache(__import__("pathlib").Path("/nonexistent/x"), SynthKnobs(classes=1))


def test_card_reuses_the_generated_cache(tmp_path):
    card = SynthCard()
    k = SynthKnobs(**TINY)
    p1 = card.prepare(tmp_path, k)
    mtime = (p1 / "manifest.json").stat().st_mtime_ns
    p2 = card.prepare(tmp_path, k)
    assert p1 == p2 and (p2 / "manifest.json").stat().st_mtime_ns == mtime
    assert card.prepare(tmp_path, SynthKnobs(**{**TINY, "snr": 0.5})) != p1


def _decoded_instance(split, proj):
    """The instance a linear read-out of clip-mean features finds: projection on the generator's map."""
    x = np.asarray(split, dtype=np.float64).mean(1)
    return (x - x.mean(0)) @ np.linalg.pinv(proj)


def test_instance_identity_makes_av_instance_retrieval_possible(tmp_path):
    from avbench.datasets.synth import _World
    from avbench.metrics.retrieval import retrieval_metrics, stratified_subset

    # Continuous events: the identity is at every step of both modalities (with the default mix, audio-
    # or visual-only clips carry it in one modality only and instant ones at 3 steps of 30).
    k = SynthKnobs(classes=6, train_clips=12, test_clips=300, steps=30, audio_dim=64, video_dim=48,
                   event_mix="continuous")
    s = FeatureCache(build_synth_cache(tmp_path / "on", k)).split("test")
    idx = stratified_subset(s.labels, 10, seed=0)  # 60 clips: chance R@1 = 1/60
    world = _World(k)
    u = s.extras["instance"][idx]
    assert retrieval_metrics(u, u)["a2v_R_at1"] == 1.0  # the stored oracle pairs audio and video rows
    on = retrieval_metrics(_decoded_instance(s.audio, world.inst_a)[idx], _decoded_instance(s.video, world.inst_v)[idx])
    assert on["a2v_R_at1"] > 0.4 and on["v2a_R_at1"] > 0.4, on  # 24x chance; measured 0.57 a2v at seed 0
    # Class-only features find the class, never the clip; without the knob the read-out finds nothing.
    cls_a = np.asarray(s.audio, np.float64).mean(1)[idx] @ world.proto_a.T
    cls_v = np.asarray(s.video, np.float64).mean(1)[idx] @ world.proto_v.T
    assert retrieval_metrics(cls_a, cls_v)["a2v_R_at1"] < 0.15
    off = FeatureCache(build_synth_cache(tmp_path / "off", SynthKnobs(**{**vars(k), "instance": 0.0}))).split("test")
    res = retrieval_metrics(_decoded_instance(off.audio, world.inst_a)[idx], _decoded_instance(off.video, world.inst_v)[idx])
    assert res["a2v_R_at1"] < 0.15, res


def test_realistic_onsets_and_class_event_types(tmp_path):
    k = SynthKnobs(classes=5, train_clips=2000, test_clips=10, steps=30, audio_dim=16, video_dim=12)
    oracle = FeatureCache(build_synth_cache(tmp_path / "o", k))
    real = FeatureCache(build_synth_cache(tmp_path / "r", SynthKnobs(**{**vars(k), "onset_jitter": 1,
                                                                         "onset_miss": 0.2, "onset_false": 0.05})))
    so, sr = oracle.train_split(), real.train_split()
    np.testing.assert_array_equal(np.asarray(so.audio), np.asarray(sr.audio))  # only the onsets differ
    rh = so.extras["event_type"] == EVENT_TYPES.index("rhythmic")
    assert not so.onsets[~rh].any()
    assert 0.03 < sr.onsets[~rh].mean() < 0.07  # false alarms at 5% of steps
    near = np.zeros_like(so.onsets)  # a reported onset within one step of a true one
    for d in (-1, 0, 1):
        near |= np.roll(so.onsets, d, axis=1)
    kept = (sr.onsets & near)[rh].sum() / so.onsets[rh].sum()
    assert 0.7 < kept < 0.95  # 80% kept (jittered by at most a step), plus a few false alarms nearby
    # Each class's own event type dominates its clips (0.5 + 0.5 * 1/5 = 60%).
    types = oracle.manifest.info["class_event_types"]
    cls = so.labels.argmax(1)
    for c, t in enumerate(types):
        share = (so.extras["event_type"][cls == c] == EVENT_TYPES.index(t)).mean()
        assert 0.5 < share < 0.7, (c, t, share)
