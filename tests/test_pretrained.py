"""VGG-16 weights through torchvision's own mechanism: torch hub cache, download, sha256 check.

The download path is exercised against a local HTTP server on 127.0.0.1 (never the internet) serving
a VGG-16 `features` state dict under a torchvision-style name `<stem>-<sha256 prefix>.pth`.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agebench.infra.pretrained import MissingWeightsError, hub_file, vgg16_state_dict


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, torch.Tensor], Path]]:
    """(base URL, the state dict served, the served folder). Random weights of VGG-16 features' shapes."""
    from torchvision.models import vgg16

    root = tmp_path_factory.mktemp("www")
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in vgg16(weights=None).features.state_dict().items()}
    state = {f"features.{k}": torch.randn(s) * 0.01 for k, s in shapes.items()}
    tmp = root / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(root / f"vgg16-{digest[:8]}.pth")
    (root / "vgg16-deadbeef.pth").write_bytes((root / f"vgg16-{digest[:8]}.pth").read_bytes())  # wrong hash
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/vgg16-{digest[:8]}.pth", state, root
    server.shutdown()
    thread.join()


def test_downloaded_once_into_torch_home_checked_and_loaded(served, tmp_path, monkeypatch) -> None:
    url, state, _ = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = hub_file(url)
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    loaded = vgg16_state_dict("", url=url)
    assert cached.is_file()
    assert sorted(loaded) == sorted(k.removeprefix("features.") for k in state)
    for k, v in state.items():
        assert torch.equal(loaded[k.removeprefix("features.")], v)
    # Second use: from the cache, no network (the URL's host is unreachable now).
    again = vgg16_state_dict("", url=f"http://127.0.0.1:1/{cached.name}")
    assert all(torch.equal(again[k], loaded[k]) for k in loaded)
    # The torchvision loader accepts what was downloaded.
    from methods.cyclegan_perceptual import vgg16_features_from_state_dict

    net = vgg16_features_from_state_dict(loaded)
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 1, 1)


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(served, tmp_path, monkeypatch) -> None:
    url, _, _ = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bad = url.rsplit("/", 1)[0] + "/vgg16-deadbeef.pth"
    with pytest.raises(MissingWeightsError, match=r"could not be downloaded.*invalid hash value.*weights_path"):
        vgg16_state_dict("", url=bad)
    checkpoints = hub_file(bad).parent
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # no partial or corrupt file left


def test_a_corrupt_cached_file_names_itself_and_the_fix(served, tmp_path) -> None:
    url, _, _ = served
    cached = hub_file(url, tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(MissingWeightsError, match=r"sha256 .* does not start with .*delete it"):
        vgg16_state_dict("", hub_dir=str(tmp_path), url=url)


def test_no_network_and_no_file_is_one_clear_error(tmp_path) -> None:
    # Port 1 on localhost: connection refused at once, like an offline machine.
    with pytest.raises(MissingWeightsError, match=r"could not be downloaded .*weights_path"):
        vgg16_state_dict("", hub_dir=str(tmp_path), url="http://127.0.0.1:1/vgg16-397923af.pth")
    with pytest.raises(MissingWeightsError, match=r"is missing; download .*weights_path"):
        vgg16_state_dict("", hub_dir=str(tmp_path), download=False)
    with pytest.raises(MissingWeightsError, match=r"weights_path: .* does not exist"):
        vgg16_state_dict(str(tmp_path / "nope.pth"))
