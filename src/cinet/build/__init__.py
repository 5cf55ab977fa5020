"""The build layer: the only code that turns config objects into modules, datasets, loss, protocol and trainer.

``builders`` builds one object per config section (model, loss, class weights, protocol, data module, one
stage's LightningModule, the Lightning ``Trainer``); ``training`` drives ``cinet train`` / ``eval`` /
``ablate`` with them (:func:`~cinet.build.training.train`, :func:`~cinet.build.training.evaluate_module`).

Below this layer nothing reads the config nor names its keys: the library (models, ops, losses, metrics, the
recipe table) takes plain arguments and raises :class:`ValueError`; the builders turn such an error into a
one-line :class:`cinet.errors.ConfigError` naming the config key (:func:`~cinet.build.builders.config_key`).
"""
