package energy.monitor.state;

/**
 * One household's state, as the operator keeps it under the household's code in its bucket's
 * map: the pane table (the energy of each slide-sized pane an open window still needs, and the
 * seconds of each pane its counted readings were stamped with), the fixed rule's alerted windows
 * that are still open, and the baseline (per slot the usual level, mean and count learned up to
 * `applied`; the windows after it, pending; the excess and run carried into the window after
 * `judgedTo`; the windows the rule alerted that are still judged). The same state as
 * pipeline/job/panes.py and core/rules/baseline.py keep per bucket, one household at a time.
 */
final class Household {
  static final long NO_WINDOW = Long.MIN_VALUE / 4;
  static final int MAX_COUNT = 65_535;
  static final int MAX_RUN = 255;
  private static final byte FORMAT = 1;

  final int words;
  final LongList panes = new LongList();
  final LongList units = new LongList();
  final LongList seen = new LongList();
  final LongList fixedAlerted = new LongList(1);  // ascending
  long fixedRule;
  long scoringRule;

  boolean learning;
  long newest = NO_WINDOW;
  double carried;
  int inARow;
  long judgedTo = NO_WINDOW;
  long applied = NO_WINDOW;
  long seed;
  double[] usual;
  double[] mean;
  int[] count;
  final LongList pendingJ = new LongList(2);
  final LongList pendingUnits = new LongList(2);
  final LongList baselineAlerted = new LongList(1);

  Household(int words) {
    this.words = words;
  }

  /** A household met for the first time, judged and learned from where the job is now. */
  static Household fresh(Rules rules) {
    Household household = new Household(words(rules));
    household.fixedRule = rules.fixedRule;
    household.scoringRule = rules.scoringRule;
    return household;
  }

  static int words(Rules rules) {
    return (int) ((rules.slideS + 63) / 64);
  }

  void startLearning(int slots) {
    learning = true;
    usual = new double[slots];
    mean = new double[slots];
    count = new int[slots];
  }

  long newestPane() {
    return panes.size == 0 ? Long.MIN_VALUE : panes.get(panes.size - 1);
  }

  /** Whether every slot has learned its warm-up. */
  boolean warm(int warmup) {
    if (!learning) {
      return false;
    }
    for (int n : count) {
      if (n < warmup) {
        return false;
      }
    }
    return true;
  }

  /** Whether the bucket held it after a call with these bounds (the household bound's count). */
  boolean present(long minOpenPane, long horizonS, long windowS) {
    return (panes.size > 0 && newestPane() >= minOpenPane) || remembered(horizonS, windowS);
  }

  /** Whether its baseline is kept: a learning window within BASELINE_FORGET_AFTER of `horizonS`. */
  boolean remembered(long horizonS, long windowS) {
    return learning && newest != NO_WINDOW && (newest + 1) * windowS >= horizonS;
  }

  /** Drops the panes before `minOpen`: every window that holds them is closed. */
  void dropClosedPanes(long minOpen) {
    int first = 0;
    while (first < panes.size && panes.get(first) < minOpen) {
      first++;
    }
    if (first == 0) {
      return;
    }
    int rest = panes.size - first;
    System.arraycopy(panes.values, first, panes.values, 0, rest);
    System.arraycopy(units.values, first, units.values, 0, rest);
    System.arraycopy(seen.values, first * words, seen.values, 0, rest * words);
    panes.size = rest;
    units.size = rest;
    seen.size = rest * words;
  }

  /** The pane's row, inserted (empty) in pane order when absent. */
  int row(long pane) {
    int low = 0;
    int high = panes.size;
    while (low < high) {
      int mid = (low + high) >>> 1;
      if (panes.get(mid) < pane) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    if (low == panes.size || panes.get(low) != pane) {
      panes.insert(low, pane);
      units.insert(low, 0);
      for (int w = 0; w < words; w++) {
        seen.insert(low * words, 0);
      }
    }
    return low;
  }

  /** Drops what the baseline learned: the household starts learning afresh at its next reading. */
  void forgetBaseline() {
    learning = false;
    usual = null;
    mean = null;
    count = null;
    newest = NO_WINDOW;
    carried = 0.0;
    inARow = 0;
    judgedTo = NO_WINDOW;
    applied = NO_WINDOW;
    pendingJ.clear();
    pendingUnits.clear();
    baselineAlerted.clear();
  }

  boolean empty() {
    return panes.size == 0 && fixedAlerted.size == 0 && !learning;
  }

  byte[] encode() {
    int slots = learning ? usual.length : 0;
    int size = 1 + 4 + 4 + panes.size * (16 + 8 * words) + 4 + 8 * fixedAlerted.size + 16 + 1;
    if (learning) {
      size += 8 + 8 + 4 + 8 + 8 + 8 + 4 + slots * 20 + 4 + 16 * pendingJ.size + 4 + 8 * baselineAlerted.size;
    }
    Blob out = new Blob(new byte[size]);
    out.putByte(FORMAT).putInt(panes.size).putInt(words);
    for (int i = 0; i < panes.size; i++) {
      out.putLong(panes.get(i)).putLong(units.get(i));
      for (int w = 0; w < words; w++) {
        out.putLong(seen.get(i * words + w));
      }
    }
    out.putInt(fixedAlerted.size);
    for (int i = 0; i < fixedAlerted.size; i++) {
      out.putLong(fixedAlerted.get(i));
    }
    out.putLong(fixedRule).putLong(scoringRule).putByte((byte) (learning ? 1 : 0));
    if (learning) {
      out.putLong(newest).putDouble(carried).putInt(inARow).putLong(judgedTo).putLong(applied).putLong(seed);
      out.putInt(slots);
      for (int s = 0; s < slots; s++) {
        out.putDouble(usual[s]).putDouble(mean[s]).putInt(count[s]);
      }
      out.putInt(pendingJ.size);
      for (int i = 0; i < pendingJ.size; i++) {
        out.putLong(pendingJ.get(i)).putLong(pendingUnits.get(i));
      }
      out.putInt(baselineAlerted.size);
      for (int i = 0; i < baselineAlerted.size; i++) {
        out.putLong(baselineAlerted.get(i));
      }
    }
    return out.bytes;
  }

  static Household decode(byte[] blob) {
    Blob in = new Blob(blob);
    byte format = in.getByte();
    if (format != FORMAT) {
      throw new IllegalStateException("household state in format " + format + ", this version reads " + FORMAT
          + ": it belongs to another version's checkpoint");
    }
    int rows = in.getInt();
    Household household = new Household(in.getInt());
    for (int i = 0; i < rows; i++) {
      household.panes.add(in.getLong());
      household.units.add(in.getLong());
      for (int w = 0; w < household.words; w++) {
        household.seen.add(in.getLong());
      }
    }
    for (int i = in.getInt(); i > 0; i--) {
      household.fixedAlerted.add(in.getLong());
    }
    household.fixedRule = in.getLong();
    household.scoringRule = in.getLong();
    if (in.getByte() == 1) {
      household.newest = in.getLong();
      household.carried = in.getDouble();
      household.inARow = in.getInt();
      household.judgedTo = in.getLong();
      household.applied = in.getLong();
      household.seed = in.getLong();
      household.startLearning(in.getInt());
      for (int s = 0; s < household.usual.length; s++) {
        household.usual[s] = in.getDouble();
        household.mean[s] = in.getDouble();
        household.count[s] = in.getInt();
      }
      for (int i = in.getInt(); i > 0; i--) {
        household.pendingJ.add(in.getLong());
        household.pendingUnits.add(in.getLong());
      }
      for (int i = in.getInt(); i > 0; i--) {
        household.baselineAlerted.add(in.getLong());
      }
    }
    return household;
  }
}
