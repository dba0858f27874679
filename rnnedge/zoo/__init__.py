"""The reference zoo: takes nothing (data ships with the project or its dependencies), gives
eighteen small Keras 3 sequence models (all but one recurrent) trained for real, each with its test
split, score and baseline.

    >>> from rnnedge import zoo
    >>> m = zoo.load("events-gru")
    >>> m.keras_score, m.baseline, m.beats_baseline()

Every model trains in a few seconds on a CPU with fixed seeds, and is cached in process and on
disk (`~/.cache/rnnedge/zoo`, file names carry `ZOO_VERSION`). Nothing is downloaded.

Tasks (the metric of each, and what its baseline is):

- digits:    sklearn's 8x8 digits read row by row (8 steps x 8 features in [0, 1]); accuracy;
             baseline = the most frequent class of the test split.
- airline:   monthly airline passengers 1949-1960, one step ahead from a 12-month window; RMSE in
             SCALED units (min-max fit on the training part: 1.0 = 401 thousand passengers);
             baseline = the naive forecast (the window's last value) on the same test windows.
- events:    synthetic spectrogram-like frames (time x 40 bins), 4 overlapping event classes
             labelled per frame; micro F1 at 0.5; baseline = the better of all-negative and
             all-positive.
- sentiment: synthetic token sequences (right-padded with 0) whose label is whether token 1 comes
             before token 2 (both appear exactly once, so word counts say nothing); accuracy;
             baseline = the most frequent class of the test split.
- seq2seq:   an encoder-decoder that reverses 5 digits (teacher forcing); the returned model also
             outputs the decoder's final state(s); per-token accuracy; baseline = the most frequent
             token of the test split.
- cells:     `RNN(StackedRNNCells([LSTMCell(4), LSTMCell(7)]))` learning y(t) = x(t)^2 + x(t-3);
             outputs y and the four states; RMSE; baseline = predicting the training mean of y.
- digits-conv: the digits as 8x8x1 images through Conv2D(8, 3x3), reshaped into 8 rows of 64
             features for a GRU (a CRNN in small); accuracy; baseline as digits.
- reviews:   the sentiment task fed as `keras.utils.pad_sequences` pads by default (zeros at the
             front), through Embedding(mask_zero=True) and an LSTM; accuracy; baseline as sentiment.
- kws:       keyword spotting on synthetic log-mel-like frames (40 bins per 10 ms frame): three
             keywords are the same three bands in different orders; a causal Conv1D front end, two
             GRUs and a softmax per frame (0 = none, or the keyword heard in the last 10 frames);
             exported with --streaming and run hop by hop; per-frame accuracy; baseline = "none".
             kws-crnn: the same task through kws_streaming's CRNN in small (Reshape to
             [time, 40, 1], two Conv2D over (time, frequency) after ZeroPadding2D on the past,
             Reshape((-1, f * c)), a GRU); kws-tcresnet: a TC-ResNet with no recurrent layer
             (causal dilated Conv1D residual blocks over the 40 bins as channels).
"""

from rnnedge.logs import quiet_tensorflow

quiet_tensorflow()  # before Keras imports TensorFlow

from rnnedge.zoo.cache import load  # noqa: E402
from rnnedge.zoo.entries import NAMES, ZOO_VERSION, ZooModel  # noqa: E402

__all__ = ["NAMES", "ZOO_VERSION", "ZooModel", "load"]
