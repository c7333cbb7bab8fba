"""The training settings of a run: :class:`TrainConfig`, one field list with each field's metadata.

Each field is declared with :func:`ftcore.core.fields.setting`: its label,
help text, command-line flag and allowed values live with it, and the CLI,
the dashboard and validation are derived from them. Import it from
:mod:`ftcore.core.config` with the other sections.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftcore.core.fields import bad_value, check_fields, field_specs, setting

__all__ = ["TrainConfig", "CLASS_BALANCE", "AUGMENT_PRESETS", "EARLY_STOPPING_METRICS", "DEVICES"]

#: Values of :attr:`TrainConfig.class_balance`.
CLASS_BALANCE = ("none", "loss", "sampler")
#: Augmentation presets of the training transform (see :func:`ftcore.data.augment.preset_transforms`).
AUGMENT_PRESETS = ("none", "light", "standard")
#: Validation metrics early stopping can watch, with the direction that is better.
EARLY_STOPPING_METRICS = {"val_loss": "min", "val_accuracy": "max", "val_macro_recall": "max"}
#: Device choices (see :func:`ftcore.accel._device.choose_device`).
DEVICES = ("auto", "cpu", "cuda", "mps")

@dataclass(frozen=True)
class TrainConfig:
    """Training settings shared by the baseline and the fine-tuned model.

    Each field's label, help text, command-line flag and allowed values are in
    its :class:`~ftcore.core.fields.FieldSpec` (``field_specs(TrainConfig)``).

    Parameters
    ----------
    epochs : int, default 3
        Passes over the training images, in [1, 1000].
    batch_size : int, default 32
        Images per step, in [1, 4096]. Capped at the number of training images.
    lr : float, default 1e-3
        Peak learning rate of AdamW per step for the head, in (0, 10]. Decays
        by a cosine over all steps (Loshchilov & Hutter, "SGDR", 2017).
    backbone_lr_scale : float, default 0.1
        Unfrozen backbone groups learn at ``lr * backbone_lr_scale``, in
        (0, 1]: pretrained layers need smaller steps than a new head
        (discriminative learning rates, Howard & Ruder, "ULMFiT", 2018).
    img_size : int or None, default None
        Square input size in pixels (16 to 1024); None uses the backbone's
        default from its ``pretrained_cfg``.
    update_bn : bool, default False
        Let BatchNorm layers in unfrozen groups update their running
        statistics (see :func:`ftcore.models.layers.set_train_mode`). Frozen groups'
        BatchNorm never updates. Needs a batch size of at least 2.
    baseline : bool, default True
        Also train the frozen baseline (linear probe) on the same split.
    seed : int, default 0
        Seed of the split, the head initialisation and the data order.
    weight_decay : float, default 0.01
        AdamW decoupled weight decay in [0, 1) (the PyTorch default for AdamW).
    num_workers : int, default 0
        Data-loader worker processes, in [0, 64]; 0 decodes in the training process.
    feature_cache : bool, default True
        When the first trainable layer sits after frozen layers, compute the
        frozen prefix's output once per image and train from it
        (:mod:`ftcore.accel._prefix`): much faster, at the cost of the random
        augmentation before the first trainable layer.
    channels_last : bool, default True
        Run convolutional models in the ``channels_last`` memory layout
        (faster for oneDNN convolutions on CPUs and for cuDNN on recent GPUs).
    class_balance : str, default "none"
        ``"none"``; ``"loss"``: cross-entropy weighted per class by
        :func:`ftcore.data.split.class_weights` (scikit-learn's "balanced" weights);
        ``"sampler"``: batches drawn with every class equally likely
        (:func:`ftcore.data.split.balanced_sampler`). For imbalanced classes.
    layer_decay : float or None, default None
        Layer-wise learning-rate decay in (0, 1]: the head learns at ``lr``
        and every layer group ``d`` groups before it at ``lr * layer_decay**d``
        (Clark et al., "ELECTRA", 2020, appendix A; Bao et al., "BEiT", 2021,
        section 2.6). None uses ``lr * backbone_lr_scale`` for every unfrozen
        backbone group instead. See :func:`ftcore.train.schedule.group_peak_lrs`.
    warmup_epochs : float, default 0.0
        Epochs of linear warm-up from ``lr / warm-up steps`` to the peak
        rate before the cosine decay, in [0, epochs); fractions of an epoch
        are allowed (rounded to whole steps).
    unfreeze_after : int, default 0
        Gradual unfreezing: train the head alone for this many epochs, then
        the ticked groups too (Howard & Ruder, "ULMFiT", 2018); 0 trains
        every ticked group from the start. In [0, epochs).
    augment : str, default "light"
        Training augmentation preset: ``"none"`` (the deterministic
        validation transform), ``"light"`` (random resized crop of 50 to 100%
        of the area and horizontal flip) or ``"standard"`` (timm's ImageNet
        recipe: crop of 8 to 100%, flip, RandAugment ``rand-m9-mstd0.5-inc1``).
    label_smoothing : float, default 0.0
        Label smoothing of the training cross-entropy in [0, 0.5] (Szegedy
        et al., "Rethinking the Inception Architecture", 2016); 0.1 is usual.
    early_stopping_patience : int, default 0
        Stop when `early_stopping_metric` has not improved for this many
        epochs, in [0, 1000], and keep the best epoch's weights; 0 turns it off.
    early_stopping_metric : str, default "val_loss"
        ``"val_loss"`` (lower is better), ``"val_accuracy"`` or
        ``"val_macro_recall"`` (higher is better).
    device : str, default "auto"
        ``"auto"`` (CUDA, else Apple MPS, else the CPU), ``"cpu"``, ``"cuda"``
        or ``"mps"``.

    Raises
    ------
    ConfigError
        If a value is outside what its field allows, naming the key and flag.
    """

    epochs: int = setting(3, label="Epochs", flag="--epochs", kind="int", low=1, high=1000,
                          help="passes over the training images")
    batch_size: int = setting(32, label="Batch size", flag="--batch-size", kind="int", low=1, high=4096,
                              help="images per step (capped at the number of training images)")
    lr: float = setting(1e-3, label="Learning rate", flag="--lr", kind="float", low=0.0, high=10.0, closed="right",
                        help="peak AdamW learning rate of the head per step; unfrozen backbone groups get less. It "
                             "decays by a cosine to zero",
                        hint="A usual value is 1e-3 (AdamW).")
    backbone_lr_scale: float = setting(
        0.1, label="Backbone learning rate, as a share of the head's", flag="--backbone-lr-scale", kind="float",
        low=0.0, high=1.0, closed="right",
        help="unfrozen backbone groups learn at lr times this: pretrained layers need smaller steps than the new "
             "head (discriminative learning rates)",
        hint="0.1 is usual; 1 gives the backbone the head's rate.")
    img_size: int | None = setting(None, label="Image size (px)", flag="--img-size", kind="int", low=16, high=1024,
                                   optional=True, none_means="the backbone's", metavar="PIXELS",
                                   help="square input side in pixels; smaller trains much faster, 224 suits most "
                                        "ImageNet backbones")
    update_bn: bool = setting(False, label="Let BatchNorm in unfrozen groups update its running statistics",
                              flag="--update-bn", kind="bool",
                              help="let BatchNorm in unfrozen groups update its running statistics; kept, they are "
                                   "steadier on small data sets. Frozen groups never change")
    baseline: bool = setting(True, label="Also train the frozen baseline (head only) for comparison",
                             flag="--no-baseline", kind="bool",
                             help="also train the frozen baseline (pretrained backbone frozen, only a new head: a "
                                  "linear probe) on the same split")
    seed: int = setting(0, label="Seed", flag="--seed", kind="int", low=0, high=2**32 - 1,
                        help="seed of the split, the head initialisation and the data order; the same seed and data "
                             "give the same metrics on the CPU")
    weight_decay: float = setting(0.01, label="Weight decay", flag="--weight-decay", kind="float", low=0.0, high=1.0,
                                  closed="left", help="AdamW decoupled weight decay",
                                  hint="A usual value is 0.01.")
    num_workers: int = setting(0, label="Data-loader workers", flag="--workers", kind="int", low=0, high=64,
                               help="data-loader worker processes; 0 decodes in the training process")
    feature_cache: bool = setting(
        True, label="Compute the frozen layers once (much faster)", flag="--no-feature-cache", kind="bool",
        help="compute the output of the frozen layers before the first unfrozen group once per image and train only "
             "the layers that learn. It gives up random crops, flips and colour changes varying between epochs, as "
             "they come before those layers")
    channels_last: bool = setting(True, label="channels_last memory layout", flag="--no-channels-last", kind="bool",
                                  help="run convolutional models in the channels_last memory layout (faster for "
                                       "oneDNN on CPUs and cuDNN on recent GPUs)")
    class_balance: str = setting("none", label="Imbalanced classes", flag="--class-balance", choices=CLASS_BALANCE,
                                 help="for imbalanced classes: none; loss: each class's errors count in inverse "
                                      "proportion to its training images (scikit-learn's balanced weights); sampler: "
                                      "batches draw every class equally often",
                                 hint="Use 'loss' or 'sampler' when some classes have many more images than others.")
    layer_decay: float | None = setting(
        None, label="Layer decay", flag="--layer-decay", kind="float", low=0.0, high=1.0, closed="right",
        optional=True, none_means="off, --backbone-lr-scale applies",
        help="layer-wise learning-rate decay: a group d groups before the head learns at lr * decay**d (as in "
             "ELECTRA and BEiT fine-tuning); replaces the backbone learning-rate scale",
        hint="0.75 is usual (BEiT), or leave it unset to use the backbone learning-rate scale.")
    warmup_epochs: float = setting(0.0, label="Warm-up epochs", flag="--warmup-epochs", kind="float", low=0.0,
                                   high=1000.0, closed="left",
                                   help="the learning rate climbs linearly to its peak over these epochs, then decays",
                                   hint="Use e.g. 1, or 0 for no warm-up.")
    unfreeze_after: int = setting(0, label="Train the head alone first for (epochs)", flag="--unfreeze-after",
                                  kind="int", low=0, high=1000, closed="left",
                                  help="gradual unfreezing: the ticked groups start learning only after these epochs",
                                  hint="Use fewer, or 0 to train the ticked groups from the start.")
    augment: str = setting("light", label="Augmentation", flag="--augment", choices=AUGMENT_PRESETS,
                           help="none: no augmentation; light: random crops of 50-100% and flips; standard: timm's "
                                "ImageNet recipe with RandAugment. Validation images are never augmented")
    label_smoothing: float = setting(0.0, label="Label smoothing", flag="--label-smoothing", kind="float", low=0.0,
                                     high=0.5, help="label smoothing of the training cross-entropy",
                                     hint="0.1 is usual, 0 turns it off.")
    early_stopping_patience: int = setting(
        0, label="Early stopping patience (epochs, 0 = off)", flag="--patience", kind="int", low=0, high=1000,
        help="stop when the watched metric has not improved for this many epochs and keep the best epoch's "
             "weights; 0 is off")
    early_stopping_metric: str = setting("val_loss", label="Early stopping watches", flag="--early-stopping-metric",
                                         choices=tuple(EARLY_STOPPING_METRICS),
                                         help="the validation metric early stopping watches")
    device: str = setting("auto", label="Device", flag="--device", choices=DEVICES,
                          help="auto: an NVIDIA GPU (bfloat16 mixed precision where supported), else an Apple GPU, "
                               "else the CPU")

    def __post_init__(self) -> None:
        check_fields(self)
        specs = field_specs(self)
        if self.update_bn and self.batch_size < 2:
            raise bad_value("batch_size", specs["batch_size"], "an int in [2, 4096] when 'update_bn' (--update-bn) is "
                            "on: a BatchNorm layer that updates its statistics needs at least 2 images a batch",
                            self.batch_size)
        specs["warmup_epochs"].check("warmup_epochs", self.warmup_epochs, high=self.epochs, why="(below 'epochs')")
        specs["unfreeze_after"].check("unfreeze_after", self.unfreeze_after, high=self.epochs,
                                      why="(below 'epochs', or the ticked groups would never learn)")
