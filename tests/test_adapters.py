"""Dataset adapters on small hand-written files in each dataset's official format."""

from __future__ import annotations

import pytest

from avbench.datasets.adapters import MediaCard
from avbench.errors import UserError
from avbench.registry import load_dataset


def touch(root, *names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x00")


def labels_of(clips, cid):
    c = next(c for c in clips.clips if c.id == cid)
    return [clips.classes[i][1] for i in c.labels], c.split


def test_cards_register_with_recipe_defaults_and_norms():
    vgg, aset, ave, llp, csvc = (load_dataset(n) for n in ("vggsound", "audioset", "ave", "llp", "csv"))
    assert all(isinstance(c, MediaCard) for c in (vgg, aset, ave, llp, csvc))
    assert vgg.recipe_defaults["lr"] == 5e-5 and aset.recipe_defaults["lr"] == 1e-5
    assert (aset.task, llp.task, vgg.task) == ("multilabel", "multilabel", "multiclass")
    assert vgg.audio_norm == (-5.081, 4.4849) and aset.audio_norm == (-4.2677, 4.5690)
    assert csvc.audio_norm is None


def test_prepare_without_cache_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="avbench extract --dataset vggsound"):
        load_dataset("vggsound").prepare(tmp_path, None)


def test_vggsound(tmp_path):
    media = tmp_path / "media"
    touch(media, "video/abc-_x12345_000030.mp4", "video/zzzzzzzzzzz_000000.mp4", "other/q1w2e3r4t5y_000120.mkv")
    (tmp_path / "vggsound.csv").write_text(
        "abc-_x12345,30,dog barking,train\n"
        'zzzzzzzzzzz,0,"alligators, crocodiles hissing",test\n'
        "q1w2e3r4t5y,120,dog barking,test\n"
        "gonegonegon,10,ambulance siren,train\n")
    clips = load_dataset("vggsound").list_clips(media, tmp_path / "vggsound.csv")
    assert [n for _, n in clips.classes] == ["alligators, crocodiles hissing", "ambulance siren", "dog barking"]
    assert clips.task == "multiclass"
    assert labels_of(clips, "abc-_x12345_000030") == (["dog barking"], "train")
    assert labels_of(clips, "zzzzzzzzzzz_000000") == (["alligators, crocodiles hissing"], "test")
    found = {c.id: c.path.name for c in clips.clips}
    assert found["q1w2e3r4t5y_000120"] == "q1w2e3r4t5y_000120.mkv"  # any container with the stem
    assert [(c.id, c.expected) for c in clips.missing] == [("gonegonegon_000010", "gonegonegon_000010.mp4")]
    assert {k: len(v) for k, v in clips.splits().items()} == {"train": 1, "test": 2}


def test_vggsound_uses_uavm_class_order_when_present(tmp_path):
    media = tmp_path / "media"
    touch(media, "a_000001.mp4")
    (tmp_path / "vggsound.csv").write_text('a,1,"alligators, crocodiles hissing",train\n')
    (tmp_path / "class_labels_indices_vgg.csv").write_text(
        "index,mid,display_name\n0,vgg_0,ambulance siren\n1,vgg_1,alligators crocodiles hissing\n")
    clips = load_dataset("vggsound").list_clips(media, tmp_path / "vggsound.csv")
    assert clips.classes == [("vgg_0", "ambulance siren"), ("vgg_1", "alligators crocodiles hissing")]
    assert clips.clips[0].labels == (1,)


def test_audioset(tmp_path):
    media = tmp_path / "media"
    touch(media, "Y--PJHxphWEs.mkv", "eval/abcdefghijk_000030.mp4")
    header = ("# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=2\n"
              "# YTID, start_seconds, end_seconds, positive_labels\n")
    (media / "balanced_train_segments.csv").write_text(
        header + '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n-missing000, 0.000, 10.000, "/m/09x0r"\n')
    (media / "eval_segments.csv").write_text(header + 'abcdefghijk, 30.000, 40.000, "/m/05zppz"\n')
    (media / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
        '2,/t/dd00088,"Gush"\n')
    clips = load_dataset("audioset").list_clips(media)  # --manifest defaults to the media root
    assert clips.task == "multilabel"
    assert labels_of(clips, "--PJHxphWEs") == (["Speech", "Gush"], "balanced_train")
    assert labels_of(clips, "abcdefghijk") == (["Male speech, man speaking"], "eval")
    assert [c.id for c in clips.missing] == ["-missing000"]
    (media / "eval_segments.csv").write_text(header + 'abcdefghijk, 30.000, 40.000, "/m/nope"\n')
    with pytest.raises(UserError, match="/m/nope"):
        load_dataset("audioset").list_clips(media)


def test_ave(tmp_path):
    media = tmp_path / "AVE"
    touch(media, "RUhOCu3LNXM.mp4", "MKiSwS5cNkM.mp4", "tkQ0pmDCu6c.mp4")
    ann = ("Category&VideoID&Quality&StartTime&EndTime\n"
           "Church bell&RUhOCu3LNXM&good&0&10\n"
           "Male speech, man speaking&MKiSwS5cNkM&good&2&8\n"
           "Bark&MKiSwS5cNkM&good&8&10\n"
           "Mandolin&tkQ0pmDCu6c&good&0&10\n"
           "Goat&notondisk01&good&0&10\n")
    (tmp_path / "Annotations.txt").write_text(ann)
    (tmp_path / "trainSet.txt").write_text("Church bell&RUhOCu3LNXM&good&0&10\nGoat&notondisk01&good&0&10\n")
    (tmp_path / "testSet.txt").write_text("Male speech, man speaking&MKiSwS5cNkM&good&2&8\n"
                                          "Mandolin&tkQ0pmDCu6c&good&0&10\n")
    clips = load_dataset("ave").list_clips(media, tmp_path / "Annotations.txt")
    assert len(clips.classes) == 28 and clips.classes[0][1] == "Church bell" and clips.classes[27][1] == "Mandolin"
    assert labels_of(clips, "RUhOCu3LNXM") == (["Church bell"], "train")
    # One video annotated with two events carries both, and the task becomes multilabel.
    assert labels_of(clips, "MKiSwS5cNkM") == (["Male speech, man speaking", "Bark"], "test")
    assert clips.task == "multilabel" and clips.source["videos_with_several_events"] == 1
    assert [c.id for c in clips.missing] == ["notondisk01"]


def test_ave_without_split_files_uses_stable_hash_split(tmp_path):
    media = tmp_path / "AVE"
    ids = [f"vid{i:08d}" for i in range(40)]
    touch(media, *(f"{v}.mp4" for v in ids))
    (media / "Annotations.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\n" +
                                           "".join(f"Cat&{v}&good&0&10\n" for v in ids))
    a = load_dataset("ave").list_clips(media)
    b = load_dataset("ave").list_clips(media)
    assert [c.split for c in a.clips] == [c.split for c in b.clips]
    assert 2 <= sum(c.split == "test" for c in a.clips) <= 16 and a.task == "multiclass"


def test_llp(tmp_path):
    media = tmp_path / "LLP_dataset" / "video"
    touch(media, "-0A9suni5YA_30_40.mp4", "--4M1mPIvcc_0_10.mp4")
    (tmp_path / "AVVP_train.csv").write_text(
        "filename\tevent_labels\n-0A9suni5YA_30_40\tSpeech,Dog\nmissing1234_0_10\tCar\n")
    (tmp_path / "AVVP_test_pd.csv").write_text("filename\tevent_labels\n--4M1mPIvcc_0_10\tClapping\n")
    clips = load_dataset("llp").list_clips(media, tmp_path)
    assert len(clips.classes) == 25 and clips.task == "multilabel"
    assert labels_of(clips, "-0A9suni5YA_30_40") == (["Speech", "Dog"], "train")
    assert labels_of(clips, "--4M1mPIvcc_0_10") == (["Clapping"], "test")
    assert [c.id for c in clips.missing] == ["missing1234_0_10"]
    (tmp_path / "AVVP_train.csv").write_text("filename\tevent_labels\n-0A9suni5YA_30_40\tKazoo\n")
    with pytest.raises(UserError, match="Kazoo"):
        load_dataset("llp").list_clips(media, tmp_path)


def test_csv_folder(tmp_path):
    touch(tmp_path, "clips/a.mp4", "clips/b.webm", "c.mkv")
    (tmp_path / "labels.csv").write_text(
        "file,label,split,comment\nclips/a.mp4,dog;cat,train,x\nclips/b.webm,cat,test,\nc.mkv,owl,train,\n"
        "gone.mp4,dog,test,\n")
    clips = load_dataset("csv").list_clips(tmp_path, tmp_path / "labels.csv")
    assert [n for _, n in clips.classes] == ["cat", "dog", "owl"]
    assert clips.task == "multilabel"
    assert labels_of(clips, "clips/a") == (["cat", "dog"], "train")
    assert labels_of(clips, "clips/b") == (["cat"], "test")
    assert [c.id for c in clips.missing] == ["gone"]
    # Without a split column the split comes from the clip id, the same on every call.
    (tmp_path / "manifest.csv").write_text("file,label\nclips/a.mp4,dog\nclips/b.webm,cat\n")
    one = load_dataset("csv").list_clips(tmp_path)
    assert one.task == "multiclass" and "split" in one.source
    assert [c.split for c in one.clips] == [c.split for c in load_dataset("csv").list_clips(tmp_path).clips]


def test_csv_errors(tmp_path):
    (tmp_path / "m.csv").write_text("path,class\nx.mp4,dog\n")
    with pytest.raises(UserError, match="'file' and 'label'"):
        load_dataset("csv").list_clips(tmp_path, tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("file,label\nx.mp4,dog\nx.mp4,cat\n")
    with pytest.raises(UserError, match="listed more than once"):
        load_dataset("csv").list_clips(tmp_path, tmp_path / "m.csv")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("csv").list_clips(tmp_path, tmp_path / "nope.csv")
    with pytest.raises(UserError, match="not a directory"):
        load_dataset("csv").list_clips(tmp_path / "nodir", tmp_path / "m.csv")
