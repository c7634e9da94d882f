package energy.monitor.state;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Baselines learned from the history's readings under the current rule (pipeline/job/seeding.py),
 * for each household to take once, at its first reading under this seed (core/rules/baseline.py's
 * adopt, one household at a time): what the seed learned of it, or a fresh start when the seed
 * does not know it; it then judges and learns from where the seed did.
 *
 * <p>Its bytes (pipeline/job/jvm.py, seed_bytes), little-endian: id, judged_to, applied, slots,
 * households; then per household its code, newest window, carried excess (double), run; then
 * per household and slot the usual level and mean (doubles) and the count.
 */
final class Seed {
  private static final Map<Long, Seed> DECODED = new ConcurrentHashMap<>();

  final long id;
  final long judgedTo;
  final long applied;
  final int slots;
  private final Map<Long, Integer> index = new HashMap<>();
  private final long[] newest;
  private final double[] carried;
  private final long[] inARow;
  private final double[] usual;
  private final double[] mean;
  private final long[] count;

  private Seed(ByteBuffer in) {
    id = in.getLong();
    judgedTo = in.getLong();
    applied = in.getLong();
    slots = (int) in.getLong();
    int households = (int) in.getLong();
    newest = new long[households];
    carried = new double[households];
    inARow = new long[households];
    usual = new double[households * slots];
    mean = new double[households * slots];
    count = new long[households * slots];
    for (int i = 0; i < households; i++) {
      index.put(in.getLong(), i);
      newest[i] = in.getLong();
      carried[i] = in.getDouble();
      inARow[i] = in.getLong();
    }
    for (int cell = 0; cell < households * slots; cell++) {
      usual[cell] = in.getDouble();
      mean[cell] = in.getDouble();
      count[cell] = in.getLong();
    }
  }

  /** The seed of these bytes, decoded once per JVM. */
  static Seed of(byte[] blob) {
    long id = ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN).getLong();
    return DECODED.computeIfAbsent(id, k -> new Seed(ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN)));
  }

  /** The household's baseline from this seed: the seed's, or a fresh start when it knows none. */
  void adopt(long code, Household h) {
    h.seed = id;
    Integer at = index.get(code);
    if (at == null && !h.learning) {
      h.judgedTo = judgedTo;
      h.applied = applied;
      return;
    }
    long newestBefore = h.learning ? h.newest : Household.NO_WINDOW;
    h.startLearning(slots);
    h.carried = 0.0;
    h.inARow = 0;
    h.newest = newestBefore;
    if (at != null) {
      h.carried = carried[at];
      h.inARow = (int) inARow[at];
      h.newest = Math.max(newestBefore, newest[at]);
      for (int s = 0; s < slots; s++) {
        h.usual[s] = usual[at * slots + s];
        h.mean[s] = mean[at * slots + s];
        h.count[s] = (int) count[at * slots + s];
      }
    }
    h.judgedTo = judgedTo;
    h.applied = applied;
    int kept = 0;
    for (int i = 0; i < h.pendingJ.size; i++) {
      if (h.pendingJ.get(i) > applied) {
        h.pendingJ.values[kept] = h.pendingJ.get(i);
        h.pendingUnits.values[kept++] = h.pendingUnits.get(i);
      }
    }
    h.pendingJ.size = kept;
    h.pendingUnits.size = kept;
  }
}
