"""A toy evaluation: the mean L2 norm of the pooled encoder features of synthetic scenes."""

from dataclasses import dataclass

from benchmark import Task, TaskSettings, check, choice, extract_features


@dataclass
class FeatureNormSettings(TaskSettings):
    n_images: int = 64  # synthetic scenes encoded
    pool: str = "all"  # all | buffer | image

    def validate(self, run) -> None:
        check(self.n_images >= 1, f"task.feature_norm.n_images must be >= 1, got {self.n_images}")
        choice("task.feature_norm.pool", self.pool, ("all", "buffer", "image"))


class FeatureNorm(Task):
    """Mean L2 norm of the pooled encoder features (a plugin task with settings of its own)."""

    Settings = FeatureNormSettings
    higher_is_better = {"norm": True}

    def run(self, model, cfg):
        from benchmark.data.synthetic import SyntheticShapes

        s = cfg.task_settings(self.name)
        images = SyntheticShapes(s.n_images, seed=5, image_size=cfg.model.image_size).images
        feats = extract_features(model, images, s.pool)
        self._extra = {"n_images": s.n_images}
        return {"norm": float(feats.norm(dim=1).mean())}
