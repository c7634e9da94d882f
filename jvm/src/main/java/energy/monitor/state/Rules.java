package energy.monitor.state;

import java.io.Serializable;
import java.util.HashMap;
import java.util.Map;

/**
 * What the operator judges with: the fixed rule, the baseline rule (or none), the households a
 * bucket may hold. Built from the `name=value;...` text the Python job writes (pipeline/job/jvm.py),
 * so that the settings are read once, in Python, and named the same on both sides.
 */
public final class Rules implements Serializable {
  public static final double KWH_UNITS = 1e9;

  public final long slideS;
  public final long windowS;
  public final long watermarkS;
  public final long panesPerWindow;
  public final long thresholdUnits;
  public final long capacity;
  public final long fixedRule;
  public final long scoringRule;
  public final boolean baseline;
  public final long slotS;
  public final int slots;
  public final double quantile;
  public final double alpha;
  public final int warmup;
  public final double excess;
  public final double persist;
  public final int run;
  public final int fastRun;
  public final double fastKwh;
  public final double fastScale;
  public final long forgetAfterS;

  public Rules(String text) {
    Map<String, String> values = new HashMap<>();
    for (String pair : text.split(";")) {
      int at = pair.indexOf('=');
      if (at > 0) {
        values.put(pair.substring(0, at), pair.substring(at + 1));
      }
    }
    slideS = whole(values, "slide_s");
    windowS = whole(values, "window_s");
    watermarkS = whole(values, "watermark_s");
    panesPerWindow = windowS / slideS;
    thresholdUnits = whole(values, "threshold_units");
    capacity = whole(values, "capacity");
    fixedRule = whole(values, "fixed_rule");
    scoringRule = whole(values, "scoring_rule");
    baseline = values.containsKey("slot_s");
    slotS = baseline ? whole(values, "slot_s") : 1;
    slots = baseline ? (int) whole(values, "slots") : 0;
    quantile = real(values, "quantile", 0);
    alpha = real(values, "alpha", 0);
    warmup = baseline ? (int) whole(values, "warmup") : 0;
    excess = real(values, "excess_kwh", 0);
    persist = real(values, "persist_kwh", 0);
    run = baseline ? (int) whole(values, "run") : 0;
    fastRun = baseline ? (int) whole(values, "fast_run") : 0;
    fastKwh = real(values, "fast_kwh", 0);
    fastScale = real(values, "fast_scale", 0);
    forgetAfterS = baseline ? whole(values, "forget_after_s") : 0;
  }

  private static long whole(Map<String, String> values, String name) {
    String value = values.get(name);
    if (value == null) {
      throw new IllegalArgumentException("rules without " + name);
    }
    return Long.parseLong(value);
  }

  private static double real(Map<String, String> values, String name, double otherwise) {
    String value = values.get(name);
    return value == null ? otherwise : Double.parseDouble(value);
  }

  /** The first window-start pane whose window ends after the watermark. */
  public long firstOpenPane(long watermarkMs) {
    return Math.floorDiv(watermarkMs, slideS * 1000) - panesPerWindow + 1;
  }

  /** The slot of tumbling window j. */
  public int slot(long j) {
    return (int) Math.floorMod(Math.floorDiv(j * windowS, slotS), (long) slots);
  }

  /** The last window whose learned state window j is judged against. */
  public long cutOff(long j) {
    return Math.floorDiv(j * windowS - watermarkS, windowS) - 1;
  }
}
