"""Sample quality without a download: a classifier trained on the data's own
labels scores a model's samples.

FID needs Inception weights, which cannot be fetched here. A small CNN trained
on the same dataset's training split gives an honest, reproducible stand-in:

- class entropy: the entropy (nats) of the mean predicted class distribution
  over prior samples; log(classes) when every class is generated equally,
  lower when some are missing;
- Fréchet distance in the classifier's feature space (its penultimate layer)
  between the test set and the samples: the Fréchet distance between two
  Gaussians fitted to the features (the formula FID uses, on other features,
  so its numbers are not FID's);
- conditional accuracy, for conditional models: the fraction of samples
  drawn for label y that the classifier assigns to y.

The classifier is trained once per dataset and cached in the model dir
(`classifier/`), with its test accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import math

import keras
import numpy as np
import tensorflow as tf

from engine.data import indexed
from engine.io import files

CACHE_DIR = "classifier"
FEATURES = 128


@dataclasses.dataclass
class ScoringClassifier:
  """The trained classifier.

  Attributes:
    model: images -> class probabilities.
    features: images -> the penultimate layer's activations [N, FEATURES].
    test_accuracy: On the dataset's test split.
  """

  model: keras.Model
  features: keras.Model
  test_accuracy: float

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    return self.model.predict(images, batch_size=500, verbose=0)

  def feature_vectors(self, images: np.ndarray) -> np.ndarray:
    return self.features.predict(images, batch_size=500, verbose=0)


def _build(image_shape: tuple, num_classes: int) -> tuple:
  images = keras.Input(shape=image_shape)
  x = keras.layers.Conv2D(32, 3, activation="relu", padding="same")(images)
  x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Conv2D(64, 3, activation="relu", padding="same")(x)
  x = keras.layers.MaxPooling2D()(x)
  features = keras.layers.Dense(FEATURES, activation="relu", name="features")(
      keras.layers.Flatten()(x))
  probabilities = keras.layers.Dense(num_classes, activation="softmax")(
      keras.layers.Dropout(0.3)(features))
  return (keras.Model(images, probabilities),
          keras.Model(images, features))


def _as_floats(images: np.ndarray) -> np.ndarray:
  return np.asarray(images, np.float32) / 255.0


def _batches(images, labels, seed: int, batch_size: int = 128):
  """Shuffled float batches gathered from the uint8 images (a tensor or an
  array), so no float copy of the training set is ever made."""
  if not isinstance(images, indexed.IndexedImages):  # That one stays on disk.
    images = tf.convert_to_tensor(images)
  labels = tf.convert_to_tensor(labels)
  return tf.data.Dataset.range(int(images.shape[0])).shuffle(
      int(images.shape[0]), seed=seed, reshuffle_each_iteration=True).batch(
          batch_size).map(lambda index: (
              tf.cast(indexed.gather(images, index), tf.float32) / 255.0,
              tf.gather(labels, index)))


def load_or_train(model_dir: str, train_images, train_labels,
                  test_images: np.ndarray, test_labels: np.ndarray,
                  seed: int = 0, epochs: int = 2) -> ScoringClassifier:
  """The dataset's classifier: restored from `<model_dir>/classifier`, or
  trained on the training split (uint8 images, as a tensor or an array;
  labels 0..C-1) and cached.

  Raises:
    ValueError: If the data has no labels (all -1).
  """
  num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
  if num_classes < 2:
    raise ValueError("sample quality needs labelled data (a classifier is "
                     "trained on the labels)")
  model, features = _build(tuple(train_images.shape[1:]), num_classes)
  cache = files.join(model_dir, CACHE_DIR)
  record = files.join(cache, "classifier.json")
  checkpoint = tf.train.Checkpoint(model=model)
  weights = files.join(cache, "weights")
  if files.gfile.exists(record):
    info = json.loads(files.read_text(record))
    # Found beside the record, not at a recorded path: a moved run
    # directory keeps its classifier.
    checkpoint.restore(weights).expect_partial()
    return ScoringClassifier(model, features, info["test_accuracy"])
  keras.utils.set_random_seed(seed)
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  model.fit(_batches(train_images, train_labels, seed), epochs=epochs,
            verbose=0, shuffle=False)  # The batches are shuffled already.
  _, accuracy = model.evaluate(_as_floats(test_images), test_labels,
                               batch_size=500, verbose=0)
  files.gfile.makedirs(cache)
  checkpoint.write(weights)
  files.write_atomically(record, json.dumps(
      {"test_accuracy": float(accuracy),
       "num_classes": num_classes, "epochs": epochs}))
  return ScoringClassifier(model, features, float(accuracy))


def class_entropy(probabilities: np.ndarray) -> float:
  """Entropy (nats) of the mean predicted class distribution."""
  mean = np.clip(np.mean(probabilities, axis=0), 1e-12, 1.0)
  return float(-np.sum(mean * np.log(mean)))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  mean_a, mean_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root_a = _sqrt_psd(cov_a)
  cross = np.trace(_sqrt_psd(root_a @ cov_b @ root_a))
  value = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
           - 2.0 * cross)
  return float(max(value, 0.0))


def prior_samples(decode, latent_dim: int, count: int, seed: int,
                  num_classes: int = 0, batch_size: int = 1000
                  ) -> tuple[np.ndarray, np.ndarray | None]:
  """`count` images decoded from z ~ N(0, I), and the labels they were drawn
  for (a conditional model's: every class in turn, so each gets count / K).

  Args:
    decode: `(z, labels) -> pixel probabilities`; labels are int32 [N], or
      None for an unconditional model.
    latent_dim: Size of z.
    count: How many samples.
    seed: Keys z.
    num_classes: K of a conditional model; 0 for an unconditional one.
    batch_size: Decoded at a time.

  Returns:
    (float32 images in [0, 1], int32 labels [count] or None).
  """
  z = tf.random.stateless_normal([count, latent_dim], seed=[seed, 11])
  labels = (np.arange(count, dtype=np.int32) % num_classes
            if num_classes else None)
  samples = [np.asarray(decode(
      z[i:i + batch_size], None if labels is None else labels[i:i + batch_size]))
             for i in range(0, count, batch_size)]
  return np.concatenate(samples), labels


def conditional_accuracy(probabilities: np.ndarray,
                         labels: np.ndarray) -> float:
  """The fraction of samples classified as the label they were drawn for."""
  return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def score(classifier: ScoringClassifier, test_images: np.ndarray,
          samples: np.ndarray, sample_labels: np.ndarray | None = None
          ) -> dict:
  """Class entropy of `samples`, their Fréchet distance to the test set
  (test images uint8, samples floats in [0, 1], same shape) and, given the
  labels they were drawn for, their conditional accuracy."""
  probabilities = classifier.probabilities(samples)
  scores = {
      "classifier_test_accuracy": classifier.test_accuracy,
      "sample_class_entropy": class_entropy(probabilities),
      "max_class_entropy": math.log(classifier.model.output_shape[-1]),
      "classifier_frechet_distance": frechet_distance(
          classifier.feature_vectors(_as_floats(test_images)),
          classifier.feature_vectors(samples)),
  }
  if sample_labels is not None:
    scores["conditional_accuracy"] = conditional_accuracy(probabilities,
                                                          sample_labels)
  return scores


def describe(scores: dict, count: int) -> str:
  """The scores in one line."""
  conditional = (f", {scores['conditional_accuracy']:.1%} classified as "
                 "their label" if "conditional_accuracy" in scores else "")
  return (f"{count} samples: class entropy "
          f"{scores['sample_class_entropy']:.3f} of "
          f"{scores['max_class_entropy']:.3f} nats, Fréchet distance in the "
          f"classifier's features {scores['classifier_frechet_distance']:.2f}"
          f"{conditional} (classifier test accuracy "
          f"{scores['classifier_test_accuracy']:.4f})")
