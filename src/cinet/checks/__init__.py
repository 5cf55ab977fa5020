"""The checks that refuse a command's input before any work: one line naming the file or config key, exit 2,
nothing written.

* :mod:`.outputs` — an output folder or file that cannot be created or written (a file in the way, a read-only
  file system), an output file that is one of the command's inputs or an existing file that is not what cinet
  writes there (an ONNX model, cinet's JSON), an existing run directory without ``--resume`` / ``--overwrite``
  (train, eval, predict, export, bench, data preview, ablate).
* :mod:`.files` — input files that are not images; from the headers: an image too large for memory, an
  ``--attention`` pixel outside it, a split whose batches would mix sizes (predict, train).
* :mod:`.labels` — label ids outside ``0..C-1`` (255 = ignore) anywhere in a split, a checkpoint of another class
  count or other classes, depth in the wrong unit (a warning) (train, eval, data preview).
* :mod:`.memory` — an image, a batch or a preview that cannot fit in the free memory; the estimates (predict and
  serve through :meth:`cinet.Predictor.check_fits`, data preview).
* :mod:`.model` — a training input whose maps degenerate for a normalisation layer, an evaluation size that cannot
  fit in memory, naming the ``data.*`` key (train, eval).
* :mod:`.data` — every data check of ``cinet train``, in order (train, hence ablate and demo).

Layering: the package sits above ``config``, ``data``, ``engine`` and ``inference`` and below ``commands``; the
per-sample checks of the data readers (sizes within a sample, EXIF orientation, label ids as each sample is
read) stay in the readers. ``cinet train``'s checks run in the training driver (:func:`cinet.build.training.train`,
which ``train``, ``ablate`` and ``demo`` call) before the run directory exists. :mod:`.memory` imports only torch and :mod:`cinet.errors` and takes plain
arguments, so that the :class:`cinet.Predictor`, which checks again before each batch, uses it without importing
a layer above its own. Library code (models, losses, ops, metrics) raises plain ``ValueError`` / ``TypeError``;
the training step checks nothing of this kind (the loss assumes the labels these checks and the readers passed).
"""
