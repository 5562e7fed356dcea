"""SPEC -> IMAGE: the reproducible build of the rocky-login and rocky-compute root filesystems.

`spec.py` says what an image is made of; `pipeline.py` runs the steps (base, build context, builder,
archive) keyed by the hash of their inputs; `backends/` are the builders (buildah, docker) that only
assemble; `tarball.py` writes the canonical tar whose digest names the image, and `store.py` keeps it
content-addressed. `client.py` compiles the native node programs the images ship. `invoke build-images`
calls `build_images`.
"""

from hpcgym.imagebuild.pipeline import BuildOptions, ImageResult, Reporter, build_images
from hpcgym.imagebuild.spec import BaseSpec, BuildBackend, Role

__all__ = ["BaseSpec", "BuildBackend", "BuildOptions", "ImageResult", "Reporter", "Role", "build_images"]
