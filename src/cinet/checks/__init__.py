"""The checks that refuse a command's input before any work: one line naming the file or config key, exit 2,
nothing written.

========================  =====================================================================  ===================
module                    what is refused (or warned about)                                       called by
========================  =====================================================================  ===================
:mod:`.outputs`           an output folder that cannot be created or written; an output file     train, eval, predict,
                          that is one of the command's inputs                                     export, bench, data
:mod:`.files`             input files that are not images; sizes from the headers: images too    predict, train, eval
                          large for memory, ``--attention`` pixels outside, a split whose
                          batches would mix sizes
:mod:`.labels`            label ids outside ``0..C-1`` (255 = ignore) anywhere in a split; a     train, eval, data
                          checkpoint of another class count or other classes; depth in the
                          wrong unit (a warning)
:mod:`.memory`            an image, a batch or a preview that cannot fit in the free memory      predict, serve (the
                          (estimates and refusals with plain arguments)                          Predictor), data
:mod:`.model`             a training input whose maps degenerate for a normalisation layer; an   train, eval
                          evaluation size that cannot fit in memory (names the ``data.*`` key)
:mod:`.data`              every data check of ``cinet train`` in order (splits, depth unit,      train (ablate, demo)
                          batch size, labels, headers, the first batch of each split)
========================  =====================================================================  ===================

Layering: the package sits above ``config``, ``data``, ``engine`` and ``inference`` and below ``commands``; the
per-sample checks of the data readers (sizes within a sample, EXIF orientation, label ids as each sample is
read) stay in the readers. :mod:`.memory` imports only torch and :mod:`cinet.errors` and takes plain
arguments, so that the :class:`cinet.Predictor`, which checks again before each batch, uses it without importing
a layer above its own. Library code (models, losses, ops, metrics) raises plain ``ValueError`` / ``TypeError``;
the training step checks nothing of this kind (the loss assumes the labels these checks and the readers passed).
"""
