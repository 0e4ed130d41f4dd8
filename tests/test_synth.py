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
