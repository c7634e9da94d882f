package energy.monitor.state;

import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The baseline rule (docs/contract.md, "Baseline rule") for one household in one batch: its
 * pending windows and the batch's, each judged against its slot's state after exactly the windows
 * up to its cut-off, in increasing j, with the excess carried from the window before it; the
 * windows up to the batch's `safe` learned for good. The float operations are the contract's, in
 * its order (the same as core/rules/baseline.py).
 */
final class Judgement {
  private final Step step;
  private final Rules rules;
  private final Household h;

  Judgement(Step step, Household h) {
    this.step = step;
    this.rules = step.rules;
    this.h = h;
  }

  void run(long code, TreeMap<Long, Long> counted, TreeMap<Long, Long> touched, List<Alert> out) {
    if (counted.isEmpty() && !h.learning) {
      return;
    }
    if (!h.learning) {
      h.startLearning(rules.slots);
    }
    TreeMap<Long, Long> rows = new TreeMap<>();
    for (int i = 0; i < h.pendingJ.size; i++) {
      rows.merge(h.pendingJ.get(i), h.pendingUnits.get(i), Long::sum);
    }
    for (Map.Entry<Long, Long> window : counted.entrySet()) {
      rows.merge(window.getKey(), window.getValue(), Long::sum);
    }
    rows.headMap(h.applied, true).clear();  // their readings came too late to be learned
    int n = rows.size();
    long[] js = new long[n];
    long[] xs = new long[n];
    int at = 0;
    for (Map.Entry<Long, Long> row : rows.entrySet()) {
      js[at] = row.getKey();
      xs[at++] = row.getValue();
    }
    if (n > 0) {
      h.newest = Math.max(h.newest, js[n - 1]);
    }
    long judgedTo = Math.max(h.judgedTo, step.firstWindow - 1);
    judge(code, js, xs, judgedTo, !counted.isEmpty(), touched, out);
    h.judgedTo = judgedTo;
    int done = 0;
    for (; done < n && js[done] <= step.safe; done++) {
      learn(rules, h.usual, h.mean, h.count, rules.slot(js[done]), xs[done] / Rules.KWH_UNITS);
    }
    h.pendingJ.clear();
    h.pendingUnits.clear();
    for (int i = done; i < n; i++) {
      h.pendingJ.add(js[i]);
      h.pendingUnits.add(xs[i]);
    }
    h.applied = Math.max(h.applied, step.safe);
    h.baselineAlerted.keepFrom(judgedTo + 1);
    if (!h.remembered(step.horizonS, rules.windowS)) {
      h.forgetBaseline();
    }
  }

  private void judge(long code, long[] js, long[] xs, long judgedTo, boolean touchedNow,
                     TreeMap<Long, Long> touched, List<Alert> out) {
    double[] usual = h.usual.clone();
    double[] mean = h.mean.clone();
    int[] count = h.count.clone();
    int learned = 0;
    long previous = Household.NO_WINDOW;
    double previousOut = 0.0;
    int previousRun = 0;
    double carryOut = 0.0;
    int carryRun = 0;
    for (int i = 0; i < js.length; i++) {
      long j = js[i];
      for (long cut = rules.cutOff(j); learned < js.length && js[learned] <= cut; learned++) {
        learn(rules, usual, mean, count, rules.slot(js[learned]), xs[learned] / Rules.KWH_UNITS);
      }
      if (j <= h.judgedTo) {  // judged for good in an earlier batch
        previous = j;
        previousOut = 0.0;
        previousRun = 0;
        continue;
      }
      int cell = rules.slot(j);
      double q = usual[cell];
      boolean scored = count[cell] >= rules.warmup;
      double limit = q + rules.excess;
      double sIn = 0.0;
      int runIn = 0;
      if (j == h.judgedTo + 1) {
        sIn = h.carried;
        runIn = h.inARow;
      } else if (previous == j - 1) {
        sIn = previousOut;
        runIn = previousRun;
      }
      double excess = xs[i] / Rules.KWH_UNITS - limit;
      double fast = Double.POSITIVE_INFINITY;
      double cap = 2 * rules.persist;
      if (rules.fastRun > 0) {
        fast = rules.fastKwh + rules.fastScale * q;
        cap = Math.max(2 * rules.persist, fast + rules.persist);
      }
      double carriedIn = scored ? sIn : 0.0;
      double carriedOut = scored ? Math.min(cap, Math.max(0.0, sIn + excess)) : 0.0;
      int run = scored && excess > 0 ? runIn + 1 : 0;
      double level = run >= rules.run ? rules.persist : Double.POSITIVE_INFINITY;
      if (rules.fastRun > 0 && run >= rules.fastRun) {
        level = Math.min(level, fast);
      }
      if (scored && carriedOut > level && touchedNow && !h.baselineAlerted.contains(j)) {
        long start = j * rules.panesPerWindow;
        out.add(new Alert(code, start, xs[i], Alert.BASELINE, limit + Math.max(0.0, level - carriedIn), q, carriedIn,
            count[cell], cell, step.crossedMs(touched, start)));
        h.baselineAlerted.add(j);
      }
      if (j == judgedTo) {
        carryOut = carriedOut;
        carryRun = run;
      }
      previous = j;
      previousOut = carriedOut;
      previousRun = run;
    }
    if (judgedTo != h.judgedTo) {
      h.carried = carryOut;
      h.inARow = Math.min(carryRun, Household.MAX_RUN);
    }
  }

  /** The contract's update of a slot with window sum x. */
  static void learn(Rules rules, double[] usual, double[] mean, int[] count, int cell, double x) {
    double q = usual[cell];
    double m = mean[cell];
    int n = count[cell];
    if (n >= rules.warmup) {
      x = Math.min(x, q + rules.excess);
    }
    if (n == 0) {
      usual[cell] = x;
      mean[cell] = x;
    } else {
      double scale = Math.max(m, rules.excess / 10);
      usual[cell] = Math.max(0.0, q + rules.alpha * scale * (rules.quantile - (x <= q ? 1.0 : 0.0)));
      mean[cell] = m + rules.alpha * (x - m);
    }
    count[cell] = Math.min(n + 1, Household.MAX_COUNT);
  }
}
