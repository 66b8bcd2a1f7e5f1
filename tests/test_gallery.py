"""Gallery tests against real Milvus: Milvus Lite (a temp file) and a real Milvus 2.3 server
(``milvus-server``, one per session, see tests/milvus_server.py). No mocks."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from lookalike_live.errors import DimensionMismatchError, GalleryError, GalleryUnavailableError, ShapeError
from lookalike_live.gallery import (
    CropMismatchError,
    Gallery,
    GalleryMatch,
    LocalIndex,
    Matcher,
    ModelMismatchError,
    ThumbnailError,
    encode_thumbnail,
    face_id,
    identity_id,
)
from lookalike_live.types import Match

DIM = 64


def _faces(n_ids: int = 12, per: int = 6, dim: int = DIM, seed: int = 0, dataset: str = "ds"):
    """Clustered unit vectors: identity centres plus noise; returns (ids, vecs, identity, name, paths, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_ids), per)
    vecs = centres[labels] + rng.standard_normal((len(labels), dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    paths = [f"img/{i:05d}.jpg" for i in range(len(labels))]
    ids = [face_id(dataset, p, 0) for p in paths]
    identity = [f"id{label}" for label in labels]
    name = [f"Person {label}" for label in labels]
    return ids, vecs.astype(np.float32), identity, name, paths, centres


def _noisy(v: np.ndarray, seed: int = 1, scale: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = v + rng.standard_normal(v.shape).astype(np.float32) * (scale / np.sqrt(v.shape[-1]))
    return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def _thumb(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((80, 60, 3), 90, np.uint8)
    img[20:60, 15:45] = rng.integers(0, 255, 3, dtype=np.uint8)
    return encode_thumbnail(img, (15, 20, 45, 60))


@pytest.fixture
def gallery(milvus_target):  # type: ignore[no-untyped-def]
    uri, collection = milvus_target
    with Gallery(uri, collection=collection, timeout=10) as g:
        g.ensure(dim=DIM, model="test-model")
        yield g


def _fill(g: Gallery, thumbs: bool = False, **kw):  # type: ignore[no-untyped-def]
    ids, vecs, identity, name, paths, centres = _faces(**kw)
    n = len(ids)
    g.upsert_faces(ids, vecs, identity, name, "ds", paths,
                   bbox=np.tile(np.array([[1, 2, 30, 40]], np.float32), (n, 1)),
                   quality=np.linspace(0, 1, n, dtype=np.float32),
                   thumbnail=[_thumb(i) for i in range(n)] if thumbs else None)
    return ids, vecs, identity, name, paths, centres


# --------------------------------------------------------------------------- ids
def test_face_id_is_stable_across_processes() -> None:
    a = face_id("celeba", "img_celeba/000001.jpg", 0)
    assert 0 <= a < 2**63
    assert a == face_id("celeba", "img_celeba\\000001.jpg", 0)  # Windows separators
    assert len({a, face_id("celeba", "img_celeba/000001.jpg", 1), face_id("lfw", "img_celeba/000001.jpg", 0),
                face_id("celeba", "img_celeba/000002.jpg", 0)}) == 4
    code = "from lookalike_live.gallery import face_id; print(face_id('celeba', 'img_celeba/000001.jpg', 0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert int(out.stdout) == a
    assert identity_id("2880") == identity_id("2880") != identity_id("2881")
    with pytest.raises(ValueError):
        face_id("celeba", "x.jpg", -1)


# --------------------------------------------------------------------------- round trips (Lite + server)
def test_round_trip_returns_the_right_identity(gallery: Gallery) -> None:
    ids, vecs, identity, name, paths, _ = _fill(gallery)
    res = gallery.search(_noisy(vecs[[0, 13, 40]]), k=3)
    assert len(res) == 3
    for row, ms in zip([0, 13, 40], res, strict=True):
        assert len(ms) == 3
        best = ms[0]
        assert isinstance(best, GalleryMatch) and isinstance(best, Match)
        assert best.identity == identity[row] and best.name == name[row]
        assert best.face_id == ids[row] and best.image_ref == paths[row] and best.dataset == "ds"
        assert best.thumbnail is None
        assert [m.score for m in ms] == sorted((m.score for m in ms), reverse=True)
        assert 0.8 < best.score <= 1.0001
    exact = gallery.search(vecs[5], k=1)[0][0]
    assert exact.face_id == ids[5] and exact.score == pytest.approx(1.0, abs=1e-4)
    assert gallery.search(np.zeros((0, DIM), np.float32)) == []


def test_upserting_twice_keeps_one_row_per_id(gallery: Gallery) -> None:
    ids, vecs, identity, name, paths, _ = _fill(gallery)
    n = len(ids)
    assert gallery.count() == n
    renamed = [f"Renamed {s}" for s in name]
    gallery.upsert_faces(ids, vecs, identity, renamed, "ds", paths)
    assert gallery.count() == n
    assert gallery.search(vecs[3], k=1)[0][0].name == renamed[3]
    assert gallery.existing_ids(ids[:5] + [12345, 67890]) == set(ids[:5])
    assert gallery.existing_ids([]) == set()
    with pytest.raises(ShapeError, match="unique"):
        gallery.upsert_faces([ids[0], ids[0]], vecs[:2], identity[:2], name[:2], "ds", paths[:2])
    with pytest.raises(ShapeError, match="same length"):
        gallery.upsert_faces(ids[:3], vecs[:2], identity[:3], name[:3], "ds", paths[:3])


def test_dimension_and_model_mismatch_are_refused(milvus_target) -> None:  # type: ignore[no-untyped-def]
    uri, collection = milvus_target
    with Gallery(uri, collection=collection) as g:
        g.ensure(dim=DIM, model="test-model")
        g.ensure(dim=DIM, model="test-model")  # idempotent
        with pytest.raises(DimensionMismatchError) as err:
            g.ensure(dim=128, model="other")
        assert f"{DIM}-d" in str(err.value) and "128-d" in str(err.value) and "--collection" in str(err.value)
        with pytest.raises(ModelMismatchError, match="test-model"):
            g.check_model("other", DIM)
        with pytest.raises(DimensionMismatchError, match="128"):
            g.search(np.ones((1, 128), np.float32))
    with Gallery(uri, collection=collection + "_missing") as g, pytest.raises(GalleryError, match="does not exist"):
        g.search(np.ones((1, DIM), np.float32))


def test_the_crop_of_the_faces_is_recorded_and_a_different_one_refused(milvus_target, caplog) -> None:  # type: ignore[no-untyped-def]
    """A gallery records how its faces were cropped (the spec's alignment): a build with another crop
    is refused (the two crops' vectors would mix), a live query with another crop warns once."""
    uri, collection = milvus_target
    crop, other = "box margin=0.2 aspect=1.2 square=True center=box upright=False", "box margin=0.2 aspect=1 ..."
    with Gallery(uri, collection=collection) as g:
        g.ensure(dim=DIM, model="test-model", crop=crop)
        g.ensure(dim=DIM, model="test-model", crop=crop)  # the same crop: fine
        assert g.stats()["crop"] == crop
        with pytest.raises(CropMismatchError) as err:
            g.ensure(dim=DIM, model="test-model", crop=other)
        text = str(err.value)
        assert crop in text and other in text and "index drop --collection" in text and "--collection" in text
        caplog.clear()
        with caplog.at_level("WARNING", logger="lookalike_live.gallery"):
            g.check_model("test-model", DIM, other)  # a query: matches still come, with a warning
            g.check_model("test-model", DIM, other)
            g.check_model("test-model", DIM, crop)
        warned = [r for r in caplog.records if "less accurate until it is rebuilt" in r.getMessage()]
        assert len(warned) == 1 and other in warned[0].getMessage()
    # a gallery built before crops were recorded: a build into it says so once and goes on
    with Gallery(uri, collection=collection + "_old") as g:
        g.ensure(dim=DIM, model="test-model")
        assert g.stats()["crop"] is None
    with Gallery(uri, collection=collection + "_old") as g, caplog.at_level("WARNING", logger="lookalike_live.gallery"):
        caplog.clear()
        g.ensure(dim=DIM, model="test-model", crop=crop)
        g.check_model("test-model", DIM, crop)
        assert [r.getMessage() for r in caplog.records if "does not say how its faces were cropped" in r.getMessage()]


def test_identity_centroids(gallery: Gallery) -> None:
    ids, vecs, identity, name, paths, _ = _fill(gallery, thumbs=True)
    assert gallery.rebuild_centroids() == 12
    labels = np.array(identity)
    members = np.flatnonzero(labels == "id4")
    mean = vecs[members].mean(axis=0)
    mean /= np.linalg.norm(mean)
    typical = int(members[np.argmax(vecs[members] @ mean)])  # the face nearest the centroid
    # the gallery's own search path (the local index on Lite) and Milvus's centroids collection
    with Gallery(gallery.uri, collection=gallery.collection, local_index=False, match_by="identity") as remote:
        for g in (gallery, remote):
            hits = g.search(mean, k=3, match_by="identity", with_thumbnails=True)[0]
            assert [h.identity for h in hits][0] == "id4" and hits[0].name == "Person 4"
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert len({h.identity for h in hits}) == 3  # identities, never the same one twice
            assert hits[0].face_id == ids[typical] and hits[0].image_ref == paths[typical]
            assert hits[0].thumbnail == _thumb(typical)
        assert remote.search(mean, k=1)[0][0].identity == "id4"  # match_by="identity" is its default
    # by face: the single nearest photo, whose identity may repeat
    near = gallery.search(vecs[members[0]], k=3, match_by="face")[0]
    assert near[0].face_id == ids[members[0]] and [h.identity for h in near].count("id4") >= 2
    with pytest.raises(ValueError, match="match_by"):
        gallery.search(mean, match_by="people")
    # an identity disappears: its centroid row goes too
    gallery.upsert_faces(ids[:6], vecs[:6], ["id4"] * 6, ["Person 4"] * 6, "ds", paths[:6])
    assert gallery.rebuild_centroids() == 11
    assert gallery.stats()["identities"] == 11


def _shared_component_faces(gallery: Gallery, n_ids: int = 12, per: int = 6):  # type: ignore[no-untyped-def]
    """Faces whose vectors share one direction at a strength that varies photo to photo (as real
    embeddings of one kind of photo do), written to ``gallery``: (ids, vecs, identity)."""
    ids, vecs, identity, name, paths, _ = _faces(n_ids=n_ids, per=per)
    rng = np.random.default_rng(9)
    shared = np.eye(DIM, dtype=np.float32)[0]
    vecs = vecs + rng.uniform(0.5, 2.5, (len(vecs), 1)).astype(np.float32) * shared
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    gallery.upsert_faces(ids, vecs, identity, name, "ds", paths, thumbnail=[_thumb(i) for i in range(len(ids))])
    return ids, vecs, identity


def test_centred_search_ranks_as_the_evaluation_scores(gallery: Gallery) -> None:
    """match_by "centred": the gallery's mean taken out of the faces, the centroids and the query.
    The local index and Milvus's centred collection (mean kept as its property) rank identities
    with the scores `eval identify` computes for "centred" from the same vectors."""
    from lookalike_live.evaluation import identity_scores

    ids, vecs, identity = _shared_component_faces(gallery)
    assert gallery.rebuild_centroids() == 12
    queries = _noisy(vecs[::7], seed=3, scale=1.5)
    names, expected = identity_scores(vecs, identity, queries, match_by="centred")
    _, plain = identity_scores(vecs, identity, queries, match_by="identity")
    assert not np.allclose(expected, plain, atol=0.05)  # centring changes the scores here
    with Gallery(gallery.uri, collection=gallery.collection, local_index=False, match_by="centred") as remote:
        assert remote.centred_mean() is not None and gallery.centroids_current()
        for g in (gallery, remote):
            hits = g.search(queries, k=3, match_by="centred", with_thumbnails=True)
            for i, row in enumerate(hits):
                order = np.argsort(-expected[i])[:3]
                assert [h.identity for h in row] == list(names[order]), ("local index" if g.local_index_enabled else "milvus", i)
                assert [h.score for h in row] == pytest.approx(expected[i][order].tolist(), abs=1e-4)
                assert row[0].thumbnail is not None and row[0].face_id in ids
        assert remote.search(queries[:1], k=1)[0][0].identity == names[np.argmax(expected[0])]  # its match_by
    # the representative photo shown is the plain centroid's (the same as identity matching shows)
    by_identity = gallery.search(queries, k=1, match_by="identity")
    by_centred = gallery.search(queries, k=1, match_by="centred")
    for a, b in zip(by_identity, by_centred, strict=True):
        if a[0].identity == b[0].identity:
            assert a[0].face_id == b[0].face_id


def test_centred_search_without_centred_centroids_uses_identity_centroids(gallery: Gallery, caplog) -> None:  # type: ignore[no-untyped-def]
    """A gallery built before centred matching existed has identity centroids only: centred matching
    answers from them, says how to add the centred ones once, and index build's check asks for them."""
    ids, vecs, identity = _shared_component_faces(gallery)
    assert gallery.rebuild_centroids() == 12
    gallery._client.drop_collection(gallery.centred_collection)  # as an older version left it
    with Gallery(gallery.uri, collection=gallery.collection, local_index=False, match_by="centred") as remote:
        assert not remote.centroids_current()  # `index build` makes them again
        hits = remote.search(vecs[:2], k=1)
        expect = remote.search(vecs[:2], k=1, match_by="identity")
        assert [h[0].identity for h in hits] == [h[0].identity for h in expect]
        assert [h[0].score for h in hits] == pytest.approx([h[0].score for h in expect], abs=1e-5)
        assert caplog.text.count("no gallery-centred centroids") == 1 and "index build" in caplog.text
        remote.search(vecs[:2], k=1)
        assert caplog.text.count("no gallery-centred centroids") == 1
    assert gallery.rebuild_centroids() == 12 and gallery.centroids_current()


def test_identity_search_without_centroids_falls_back_to_faces(gallery: Gallery, caplog) -> None:  # type: ignore[no-untyped-def]
    """An interrupted (or older) build has no centroids yet: identity matching searches faces and says how to fix it."""
    ids, vecs, *_ = _fill(gallery)
    gallery.flush()
    with Gallery(gallery.uri, collection=gallery.collection, local_index=False, match_by="identity") as remote:
        hits = remote.search(vecs[5], k=1)[0]
        assert hits[0].face_id == ids[5]
        assert "index build" in caplog.text


@pytest.mark.slow
def test_live_searcher_switches_to_centroids_once_a_build_adds_them(gallery: Gallery, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The async (AsyncMilvusClient) path of a server gallery: single faces while there are no
    centroids, identity centroids with their most typical photo once rebuild_centroids ran."""
    import lookalike_live.gallery.common as gmod

    if gallery.is_lite:
        pytest.skip("Milvus Lite galleries search their in-process index, not AsyncMilvusClient")
    ids, vecs, identity, *_ = _fill(gallery)
    gallery.flush()
    monkeypatch.setattr(gmod, "CENTROIDS_RECHECK_S", 0.5)
    with Gallery(gallery.uri, collection=gallery.collection, match_by="identity") as live:
        matcher = live.matcher()
        try:
            first = matcher.submit("cam", vecs[7:8], k=3).result(timeout=30)[0]
            assert first[0].face_id == ids[7]  # no centroids yet: the nearest single photo
            assert gallery.rebuild_centroids() == 12
            gallery.wait_for_index(timeout=120, collection=gallery.identities_collection)
            time.sleep(0.6)
            hits = matcher.submit("cam", vecs[7:8], k=3).result(timeout=30)[0]
            labels = np.array(identity)
            members = np.flatnonzero(labels == identity[7])
            mean = vecs[members].mean(axis=0)
            typical = int(members[np.argmax(vecs[members] @ (mean / np.linalg.norm(mean)))])
            assert hits[0].identity == identity[7] and hits[0].face_id == ids[typical]
            assert len({h.identity for h in hits}) == 3
        finally:
            matcher.close()


def test_live_matcher_on_a_server_matches_centred_once_a_build_adds_them(gallery: Gallery, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The async path with match_by "centred": single faces before any centroids, then the centred
    collection's scores (the query centred on the mean kept in its property), as the evaluation
    computes them."""
    import lookalike_live.gallery.common as gmod
    from lookalike_live.evaluation import identity_scores

    if gallery.is_lite:
        pytest.skip("Milvus Lite galleries search their in-process index, not AsyncMilvusClient")
    ids, vecs, identity = _shared_component_faces(gallery)
    gallery.flush()
    monkeypatch.setattr(gmod, "CENTROIDS_RECHECK_S", 0.5)
    query = _noisy(vecs[7:8], seed=4, scale=1.5)
    names, expected = identity_scores(vecs, identity, query, match_by="centred")
    with Gallery(gallery.uri, collection=gallery.collection, match_by="centred") as live:
        matcher = live.matcher()
        try:
            first = matcher.submit("cam", vecs[7:8], k=3).result(timeout=30)[0]
            assert first[0].face_id == ids[7]  # nothing but faces yet
            assert gallery.rebuild_centroids() == 12
            for name in (gallery.identities_collection, gallery.centred_collection):
                gallery.wait_for_index(timeout=120, collection=name)
            time.sleep(0.6)
            hits = matcher.submit("cam", query, k=3).result(timeout=30)[0]
            order = np.argsort(-expected[0])[:3]
            assert [h.identity for h in hits] == list(names[order])
            assert [h.score for h in hits] == pytest.approx(expected[0][order].tolist(), abs=1e-4)
        finally:
            matcher.close()


def test_thumbnails_round_trip(gallery: Gallery) -> None:
    ids, vecs, *_ = _fill(gallery, thumbs=True)
    assert gallery.thumbnail(ids[2]) == _thumb(2)
    assert gallery.thumbnail(123456789) is None
    assert gallery.thumbnails(ids[:3]) == {ids[i]: _thumb(i) for i in range(3)}
    plain = gallery.search(vecs[7], k=1)[0][0]
    assert isinstance(plain, GalleryMatch) and plain.thumbnail is None
    best = gallery.search(vecs[7], k=2, with_thumbnails=True)[0]
    assert isinstance(best[0], GalleryMatch) and best[0].thumbnail == _thumb(7)
    assert all(isinstance(m, GalleryMatch) and m.thumbnail for m in best)
    with pytest.raises(ThumbnailError, match="JPEG"):
        gallery.upsert_faces(ids[:1], vecs[:1], ["a"], ["a"], "ds", ["a.jpg"], thumbnail=[b"PNG..."])
    with pytest.raises(ThumbnailError, match="limit"):
        gallery.upsert_faces(ids[:1], vecs[:1], ["a"], ["a"], "ds", ["a.jpg"], thumbnail=[b"\xff\xd8" + bytes(13000)])


def test_stats(gallery: Gallery) -> None:
    _fill(gallery)
    gallery.rebuild_centroids()
    info = gallery.wait_for_index(timeout=120)
    assert info.get("pending_index_rows", 0) == 0
    s = gallery.stats()
    assert s["exists"] and s["faces"] == 72 and s["identities"] == 12
    assert s["model"] == "test-model" and s["dim"] == DIM
    assert s["uri"] == gallery.uri and s["collection"] == gallery.collection
    assert s["index"]["type"] == ("FLAT" if gallery.is_lite else "HNSW") and s["index"]["metric"] == "COSINE"
    assert s["load_state"] == "Loaded"
    assert s["backend"] == ("milvus-lite" if gallery.is_lite else "milvus")
    assert s["local_index"]["enabled"] is gallery.is_lite


def test_rows_and_records_api(gallery: Gallery) -> None:
    ids, vecs, identity, name, paths, _ = _faces(n_ids=2, per=2)
    rows = [{"id": ids[i], "vector": vecs[i], "identity": identity[i], "name": name[i], "dataset": "ds",
             "image_path": paths[i], "bbox": (1.0, 2.0, 3.0, 4.0), "quality": 0.5, "thumbnail": _thumb(i)}
            for i in range(4)]
    assert gallery.upsert_rows(rows) == 4
    assert gallery.count() == 4
    with pytest.raises(ShapeError, match="identity"):
        gallery.upsert_rows([{"id": 1, "vector": vecs[0]}])


# --------------------------------------------------------------------------- async (Lite + server)
def test_async_searcher_results_and_bounded_queue(gallery: Gallery) -> None:
    ids, vecs, identity, *_ = _fill(gallery)
    gallery.flush()
    with Matcher(gallery, max_pending=4, max_in_flight=1, timeout=5) as s:
        futs = [s.submit("", _noisy(vecs[[i, i + 1]], seed=i), k=2) for i in range(0, 8, 2)]
        for i, f in zip(range(0, 8, 2), futs, strict=True):
            res = f.result(timeout=10)
            assert [ms[0].identity for ms in res] == [identity[i], identity[i + 1]]
        # flood it: never more than max_pending waiting, the oldest are dropped and counted
        flood = [s.submit("cam", vecs[i % len(ids)], k=1) for i in range(300)]
        done, _ = concurrent.futures.wait(flood, timeout=60)
        assert len(done) == 300
        cancelled = sum(f.cancelled() for f in flood)
        st = s.stats()
        assert cancelled > 0 and st["dropped"] == cancelled
        assert st["completed"] + st["failed"] + st["dropped"] == st["submitted"] == 304
        assert st["failed"] == 0
        assert not flood[-1].cancelled()  # the newest request always survives
        assert flood[-1].result()[0][0].face_id == ids[299 % len(ids)]
        bad = s.submit("", np.ones((1, DIM + 1), np.float32))
        with pytest.raises(DimensionMismatchError):
            bad.result(timeout=5)


def test_async_searcher_one_flooding_source_never_starves_the_others(gallery: Gallery) -> None:
    """Four cameras share one matcher; one floods it (bursts of 50 queries every 5 ms) while the
    three others send a query each every 40 ms: every query of the three is answered, only the flood's own
    oldest are dropped, and the free slots go round the cameras."""
    ids, vecs, identity, *_ = _fill(gallery)
    gallery.flush()
    with Matcher(gallery, max_pending=4, max_in_flight=1, timeout=5) as s:
        calm: dict[str, list[concurrent.futures.Future]] = {f"cam{c}": [] for c in range(3)}
        flood: list[concurrent.futures.Future] = []
        stop = threading.Event()

        def flooding() -> None:  # bursts of 50 queries every 5 ms: far more than one slot serves
            i = 0
            while not stop.is_set():
                flood.extend(s.submit("busy", vecs[(i + j) % len(ids)], k=1) for j in range(50))
                i += 50
                time.sleep(0.005)

        t = threading.Thread(target=flooding)
        t.start()
        try:
            for n in range(10):  # the others: one query each every 40 ms
                for c, futs in calm.items():
                    futs.append(s.submit(c, vecs[(n + len(c)) % len(ids)], k=1))
                time.sleep(0.04)
        finally:
            stop.set()
            t.join()
        everything = flood + [f for futs in calm.values() for f in futs]
        done, _ = concurrent.futures.wait(everything, timeout=60)
        assert len(done) == len(everything)
        answered = {c: sum(not f.cancelled() and f.exception() is None for f in futs) / len(futs)
                    for c, futs in calm.items()}
        print("answer rate per camera:", answered, "busy:",
              round(sum(not f.cancelled() for f in flood) / len(flood), 3))
        assert answered == {c: 1.0 for c in calm}, answered
        st = s.stats()
        assert st["by_source"]["busy"]["dropped"] == sum(f.cancelled() for f in flood) > 0
        assert all(st["by_source"][c]["dropped"] == 0 for c in calm)
        assert st["dropped"] == st["by_source"]["busy"]["dropped"]
        assert not flood[-1].cancelled()  # the flood's newest request survives


def test_lite_async_milvus_client_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Milvus Lite 3.2 serves pymilvus's AsyncMilvusClient (it is a gRPC server in this process)."""
    with Gallery(str(tmp_path / "g.db"), local_index=False) as g:
        g.ensure(dim=DIM, model="test-model")
        ids, vecs, identity, *_ = _fill(g)
        with g.matcher(timeout=10) as s:
            res = s.submit("cam", vecs[[1, 30]], k=1).result(timeout=20)
            assert [ms[0].face_id for ms in res] == [ids[1], ids[30]]
            assert s.stats()["milvus"] == 1 and s.stats()["local"] == 0


# --------------------------------------------------------------------------- Lite's local index
def test_lite_local_index_is_persisted_and_invalidated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "g.db")
    with Gallery(uri) as g:
        g.ensure(dim=DIM, model="test-model")
        ids, vecs, identity, name, paths, _ = _fill(g)
        assert g.stats()["local_index"]["rows"] == len(ids)
    cache = tmp_path / "g.db.lookalike-index" / "faces"
    assert (cache / "meta.json").is_file()
    with Gallery(uri) as g:  # loads the persisted copy
        assert g.search(vecs[9], k=1)[0][0].face_id == ids[9]
        assert g.stats()["local_index"]["ready"]
    # a write made without the local index changes the generation: the cache is not trusted
    with Gallery(uri, local_index=False) as g:
        g.upsert_faces(ids[:1], vecs[[9]], ["moved"], ["Moved"], "ds", paths[:1])
    with Gallery(uri) as g:
        best = g.search(vecs[9], k=2)[0]
        assert {m.identity for m in best} == {"moved", identity[9]}


def test_lite_snapshot_answers_with_photos_from_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The live matcher on a Lite gallery answers with the matched photo without asking Milvus:
    identity matching shows each identity's representative, which the snapshot holds (and
    persists); face matching fetches a photo it lacks once, then holds it."""
    uri = str(tmp_path / "g.db")
    with Gallery(uri) as g:
        g.ensure(dim=DIM, model="test-model")
        ids, vecs, *_ = _fill(g, thumbs=True)
        assert g.rebuild_centroids() == 12
    thumbs = {ids[i]: _thumb(i) for i in range(len(ids))}
    cache = tmp_path / "g.db.lookalike-index" / "faces"
    saved = LocalIndex.load(cache)
    reps = saved.identity_rows()
    held, missing = saved.thumbnails(r["face_id"] for r in reps)
    assert missing == [] and {f: held[f] for f in held} == {r["face_id"]: thumbs[r["face_id"]] for r in reps}

    with Gallery(uri, match_by="identity") as g:
        assert g.warm_local_index() is not None  # loaded from the cache, photos included
        with g.matcher(timeout=10) as m:
            res = m.submit("cam", vecs[[3, 40]], k=2).result(timeout=20)
            assert all(h.thumbnail == thumbs[h.face_id] for ms in res for h in ms)
            st = m.stats()
            assert (st["local"], st["milvus"], st["thumbnails_fetched"]) == (1, 0, 0)
    with Gallery(uri, match_by="face") as g:
        g.warm_local_index()
        with g.matcher(timeout=10) as m:
            first = m.submit("cam", vecs[[5]], k=3).result(timeout=20)[0]
            assert [h.thumbnail for h in first] == [thumbs[h.face_id] for h in first]
            fetched = m.stats()["thumbnails_fetched"]
            assert fetched >= 2  # at most one of an identity's faces is its representative
            again = m.submit("cam", vecs[[5]], k=3).result(timeout=20)[0]
            assert [h.thumbnail for h in again] == [h.thumbnail for h in first]
            assert m.stats()["thumbnails_fetched"] == fetched  # held since the first answer
            bare = m.submit("cam", vecs[[5]], k=3, thumbnails=False).result(timeout=20)[0]
            assert [h.face_id for h in bare] == [h.face_id for h in first] and all(h.thumbnail is None for h in bare)


def test_local_index_thumbnail_cache_is_bounded_and_persisted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ids, vecs, identity, name, paths, _ = _faces(n_ids=4, per=3)
    idx = LocalIndex(DIM)
    idx.upsert(ids, vecs, identity, name, ["ds"] * len(ids), paths)
    idx.thumbnail_cache = 3
    asked: list[list[int]] = []

    def fetch(wanted: list[int]) -> dict[int, bytes | None]:
        asked.append(wanted)
        return {f: (_thumb(ids.index(f)) if f != wanted[0] else None) for f in wanted}  # one has none

    assert idx.pin_representatives(fetch) == 4 and idx.pin_representatives(fetch) == 0  # held: not asked again
    reps = {r["face_id"] for r in idx.identity_rows()}
    others = [f for f in ids if f not in reps]
    idx.keep_thumbnails({f: _thumb(ids.index(f)) for f in others})  # 8 faces into a cache of 3
    held, missing = idx.thumbnails(ids)
    assert set(held) == reps | set(others[-3:]) and missing == sorted(others[:-3])
    assert held[asked[0][0]] is None  # "no photo" is held too: never asked again
    idx.save(tmp_path / "idx")
    back = LocalIndex.load(tmp_path / "idx")
    assert back.thumbnails(ids) == (held, missing)
    idx.upsert(ids[:1], vecs[:1], identity[:1], name[:1], ["ds"], paths[:1])  # a replaced face: its photo may differ
    assert ids[0] in idx.thumbnails(ids[:1])[1]


def test_the_matcher_reads_the_gallery_only_through_public_calls() -> None:
    """The read side uses the write side's public surface, never its private state."""
    import ast
    import inspect

    import lookalike_live.gallery.matcher as matcher_module

    tree = ast.parse(inspect.getsource(matcher_module))
    reach_ins = sorted({
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        and ((isinstance(node.value, ast.Attribute) and node.value.attr == "gallery")
             or (isinstance(node.value, ast.Name) and node.value.id in ("g", "gallery")))
    })
    assert reach_ins == [], reach_ins


def test_local_index_ivf_matches_exact_search() -> None:
    rng = np.random.default_rng(3)
    _, vecs, identity, name, paths, centres = _faces(n_ids=150, per=12, seed=3)
    idx = LocalIndex(DIM, nprobe=8, exact_max=500)
    ids = np.arange(len(vecs)) * 7 + 1
    for s in range(0, len(vecs), 100):  # small batches: the buffers grow past the row count
        e = s + 100
        idx.upsert(ids[s:e], vecs[s:e], identity[s:e], name[s:e], ["ds"] * len(ids[s:e]), paths[s:e])
    assert len(idx._vecs) > len(idx)
    idx.prepare()
    assert idx.mode.startswith("ivf(150 lists")
    q = _noisy(centres[rng.integers(0, 150, 200)], seed=4, scale=0.7)
    scores, rows = idx.search(q, k=3)
    exact = np.argsort(-(q @ vecs.T), axis=1)[:, :3]
    assert (rows[:, 0] == exact[:, 0]).mean() >= 0.99
    assert np.allclose(scores[:, 0], (q @ vecs.T).max(axis=1), atol=1e-5)
    # replace a vector: the new one is found, the old position is not duplicated
    idx.upsert(ids[:1], vecs[[100]], ["x"], ["X"], ["ds"], ["p"])
    s2, r2 = idx.search(vecs[[100]], k=2)
    assert {idx.row(int(r))[0] for r in r2[0]} == {int(ids[0]), int(ids[100])}
    assert len(idx) == len(vecs)


# --------------------------------------------------------------------------- failures
def test_unreachable_uri_fails_fast() -> None:
    from milvus_server import free_ports

    port = free_ports(1)[0]
    t0 = time.monotonic()
    with pytest.raises(GalleryUnavailableError) as err:
        Gallery(f"http://127.0.0.1:{port}", timeout=3)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "docker compose up -d" in msg


@pytest.mark.milvus_server
def test_search_while_server_is_down_then_recovers(milvus_server) -> None:  # type: ignore[no-untyped-def]
    """Runs last: it stops and restarts the session's server (same data dir, same port)."""
    uri = milvus_server.uri
    with Gallery(uri, collection="fault_test", timeout=5) as g:
        g.drop()
        g.ensure(dim=DIM, model="test-model")
        ids, vecs, *_ = _fill(g)
        g.flush()
        with Matcher(g, timeout=2, reconnect_interval=0.5) as s:
            assert s.submit("cam", vecs[4]).result(timeout=10)[0][0].face_id == ids[4]
            milvus_server.stop()
            t0 = time.monotonic()
            fut = s.submit("cam", vecs[4])
            with pytest.raises(GalleryUnavailableError, match=uri.split("//")[1]):
                fut.result(timeout=10)
            assert time.monotonic() - t0 < 5
            with pytest.raises(GalleryUnavailableError):
                g.search(vecs[4])
            # live video asks far more often than reconnect_interval: the fast failures in between
            # must not keep pushing the next reconnect attempt back
            for _ in range(20):
                with pytest.raises(GalleryUnavailableError):
                    s.submit("cam", vecs[4]).result(timeout=10)
                time.sleep(0.1)
            assert "reconnecting" in s.stats()["last_error"] and s.stats()["last_error"].count("last error") == 1
            milvus_server.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    res = s.submit("cam", vecs[4]).result(timeout=10)
                    break
                except GalleryUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert res[0][0].face_id == ids[4]
            assert s.stats()["reconnects"] >= 1
        assert g.search(vecs[4])[0][0].face_id == ids[4]  # the sync client recovers too


@pytest.mark.race
def test_a_gallery_opened_while_the_last_one_closes_keeps_a_working_server(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Milvus Lite race: the last Gallery of a file stops its in-process server at close; a Gallery
    that connects meanwhile (the app reloading its engine does this) must not be left with a
    stopped server. The stop is slowed down to open the window every time."""
    from milvus_lite.server_manager import server_manager_instance

    uri = str(tmp_path / "race.db")
    with Gallery(uri, collection="faces", timeout=10) as g:
        g.ensure(dim=DIM, model="test-model")
        _fill(g)
        g.flush()
    real = server_manager_instance.release_server
    stopping = threading.Event()

    def slow_release(path):  # type: ignore[no-untyped-def]
        stopping.set()
        time.sleep(0.5)  # the window: the count is zero, the server still runs
        return real(path)

    monkeypatch.setattr(server_manager_instance, "release_server", slow_release)
    first = Gallery(uri, collection="faces", timeout=10)
    closer = threading.Thread(target=first.close)
    closer.start()
    assert stopping.wait(10)
    second = Gallery(uri, collection="faces", timeout=10)  # connects inside the window
    closer.join()
    try:
        assert second.count() == 72  # its server is alive (before the fix: stopped under it)
    finally:
        second.close()


@pytest.mark.race
def test_submit_racing_close_never_raises(gallery: Gallery) -> None:
    """A submit that passed the closed-check just before close() stopped the event loop: it must
    hand back a finished future, not raise RuntimeError into the engine's loop."""
    _fill(gallery)
    gallery.flush()
    s = Matcher(gallery, timeout=5)
    entered, gate = threading.Event(), threading.Event()
    real_loop = s._loop  # noqa: SLF001

    class HeldLoop:  # the submitting thread is held just before it wakes the loop
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(real_loop, name)

        def call_soon_threadsafe(self, *args):  # type: ignore[no-untyped-def]
            if threading.current_thread().name == "submitter":
                entered.set()
                gate.wait(10)
            return real_loop.call_soon_threadsafe(*args)

    s._loop = HeldLoop()  # type: ignore[assignment]  # noqa: SLF001
    out: dict[str, object] = {}

    def submit() -> None:
        try:
            out["future"] = s.submit("cam", np.ones((1, DIM), np.float32))
        except BaseException as exc:  # noqa: BLE001 - what the test looks for
            out["error"] = exc

    t = threading.Thread(target=submit, name="submitter")
    t.start()
    assert entered.wait(10)
    s.close()  # stops and closes the loop while the submitter is held
    gate.set()
    t.join(10)
    assert "error" not in out, out
    fut = out["future"]
    assert isinstance(fut, concurrent.futures.Future) and fut.done()


@pytest.mark.race
def test_searcher_close_waits_for_the_local_index_load(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "warm.db")
    with Gallery(uri, collection="faces", timeout=10) as g:
        g.ensure(dim=DIM, model="test-model")
        _fill(g)
        g.flush()
    with Gallery(uri, collection="faces", timeout=10) as g:
        real = g.warm_local_index

        def slow_warm():  # type: ignore[no-untyped-def]
            time.sleep(1.0)
            return real()

        monkeypatch.setattr(g, "warm_local_index", slow_warm)
        s = Matcher(g, timeout=2)
        warm = s._warm_thread  # noqa: SLF001
        assert warm is not None and warm.is_alive()
        s.close()
        assert not warm.is_alive()  # the gallery is not closed under a loading thread
