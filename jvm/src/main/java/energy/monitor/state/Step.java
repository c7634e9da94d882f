package energy.monitor.state;

import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * One household's readings of one micro-batch applied to its state: the pane table, the fixed
 * rule on the sliding windows the batch touched, and the baseline rule on its tumbling windows
 * (docs/contract.md). The watermark is the batch's; everything else is the household's own, so a
 * household's result does not depend on which others share its bucket or batch.
 */
final class Step {
  final Rules rules;
  private final Seed seed;
  final long minOpen;
  final long firstWindow;
  final long safe;
  final long horizonS;
  int late;
  int duplicates;

  /** `seed`: the baselines to adopt (null: none). */
  Step(Rules rules, long watermarkMs, Seed seed) {
    this.rules = rules;
    this.seed = seed;
    minOpen = rules.firstOpenPane(watermarkMs);
    firstWindow = Math.floorDiv(minOpen * rules.slideS, rules.windowS);
    // Learned for good: the windows up to the cut-off of the first window a reading can still count in.
    safe = rules.cutOff(firstWindow);
    horizonS = Math.floorDiv(watermarkMs, 1000) - rules.forgetAfterS;
  }

  /** Applies the batch's readings at [from, to) (one household's, in the order they arrived) and adds the alerts to `out`. */
  void apply(long code, Household h, BucketReadings batch, int from, int to, List<Alert> out) {
    if (h.fixedRule != rules.fixedRule) {
      h.fixedAlerted.clear();
      h.fixedRule = rules.fixedRule;
    }
    if (h.scoringRule != rules.scoringRule) {
      h.baselineAlerted.clear();
      h.scoringRule = rules.scoringRule;
    }
    if (rules.baseline && seed != null && h.seed != seed.id) {
      seed.adopt(code, h);
    }
    h.dropClosedPanes(minOpen);
    TreeMap<Long, Long> touched = new TreeMap<>();  // pane -> newest record time of a counted reading in it
    TreeMap<Long, Long> windowUnits = new TreeMap<>();  // tumbling window -> units counted now
    long[] epochS = batch.epochS;
    long[] units = batch.units;
    for (int i = from; i < to; i++) {
      long pane = Math.floorDiv(epochS[i], rules.slideS);
      if (pane < minOpen) {
        late++;
        continue;
      }
      long second = epochS[i] - pane * rules.slideS;
      int row = h.row(pane);
      int word = row * h.words + (int) (second / 64);
      long bit = 1L << (second % 64);
      if ((h.seen.values[word] & bit) != 0) {
        duplicates++;
        continue;
      }
      h.seen.values[word] |= bit;
      h.units.values[row] += units[i];
      touched.merge(pane, batch.recordMs[i], Math::max);
      windowUnits.merge(Math.floorDiv(pane, rules.panesPerWindow), units[i], Long::sum);
    }
    judgeFixed(code, h, touched, out);
    if (rules.baseline) {
      new Judgement(this, h).run(code, windowUnits, touched, out);
    }
  }

  private void judgeFixed(long code, Household h, TreeMap<Long, Long> touched, List<Alert> out) {
    long[] prefix = new long[h.panes.size + 1];
    for (int i = 0; i < h.panes.size; i++) {
      prefix[i + 1] = prefix[i] + h.units.get(i);
    }
    long k = rules.panesPerWindow;
    long next = Long.MIN_VALUE;  // the first window start not yet judged
    for (long pane : touched.keySet()) {
      long s = Math.max(Math.max(pane - k + 1, minOpen), next);
      // The rows of the window's first pane and of the pane after it only move forward with s.
      int first = lowerBound(h, s);
      int end = lowerBound(h, s + k);
      for (; s <= pane; s++) {
        while (first < h.panes.size && h.panes.get(first) < s) {
          first++;
        }
        while (end < h.panes.size && h.panes.get(end) < s + k) {
          end++;
        }
        long sum = prefix[end] - prefix[first];
        if (sum > rules.thresholdUnits && h.fixedAlerted.addSorted(s)) {
          out.add(Alert.fixed(code, s, sum, crossedMs(touched, s)));
        }
      }
      next = Math.max(next, pane + 1);
    }
    h.fixedAlerted.keepFrom(minOpen);
  }

  /** The newest record time among this batch's counted readings in the window starting at pane `start`. */
  long crossedMs(TreeMap<Long, Long> touched, long start) {
    long newest = 0;
    for (Map.Entry<Long, Long> pane : touched.subMap(start, start + rules.panesPerWindow).entrySet()) {
      newest = Math.max(newest, pane.getValue());
    }
    return newest;
  }

  private static int lowerBound(Household h, long pane) {
    int low = 0;
    int high = h.panes.size;
    while (low < high) {
      int mid = (low + high) >>> 1;
      if (h.panes.get(mid) < pane) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    return low;
  }
}
