package energy.monitor.state;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What the operator does with one state bucket in one micro-batch (the JVM's pipeline/job/state.py):
 * it takes the bucket's readings (admit: the households it holds, and new ones while it has
 * room), applies each household's readings to its state (Step), and returns the alerts, the
 * refused readings and the dead letters, counting what it did (Tally).
 */
final class BucketStep {
  static final String HOUSEHOLD_LIMIT = "household_limit";

  private final Rules rules;
  private final Seed seed;
  private final Map<Long, Readings> batch = new LinkedHashMap<>();
  private final List<Output> out = new ArrayList<>();
  final Tally tally = new Tally();

  /** `seed`: the baselines to adopt (null: none). */
  BucketStep(Rules rules, Seed seed) {
    this.rules = rules;
    this.seed = seed;
  }

  /** A household's readings of the batch, in the order they arrived. */
  private static final class Readings {
    long[] epochS = new long[2];
    long[] units = new long[2];
    long[] recordMs = new long[2];
    long[] positions = new long[2];
    int n;

    void add(long epoch, long kwhUnits, long record, long position) {
      if (n == epochS.length) {
        epochS = Arrays.copyOf(epochS, 2 * n);
        units = Arrays.copyOf(units, 2 * n);
        recordMs = Arrays.copyOf(recordMs, 2 * n);
        positions = Arrays.copyOf(positions, 2 * n);
      }
      epochS[n] = epoch;
      units[n] = kwhUnits;
      recordMs[n] = record;
      positions[n++] = position;
    }
  }

  void reading(long household, long epochS, long units, long recordMs, long position) {
    batch.computeIfAbsent(household, h -> new Readings()).add(epochS, units, recordMs, position);
  }

  void deadLetter(String document) {
    tally.reasons.merge(reason(document), 1L, Long::sum);
    out.add(Output.letter(document));
  }

  /** The batch applied to the bucket's households in `store`; `meta` is updated to match. */
  List<Output> run(long watermarkMs, Store store, Meta meta) {
    Step step = new Step(rules, watermarkMs, seed);
    Map<Long, Household> taken = admit(store, meta);
    List<Alert> alerts = new ArrayList<>();
    for (Map.Entry<Long, Readings> entry : batch.entrySet()) {
      long code = entry.getKey();
      Readings readings = entry.getValue();
      if (!taken.containsKey(code)) {
        refuse(code, readings);
        continue;
      }
      Household household = taken.get(code);
      boolean held = household != null;
      if (!held) {
        household = Household.fresh(rules);
      } else if (household.learning && !household.remembered(meta.horizonS(rules), rules.windowS)) {
        household.forgetBaseline();  // as the bucket's last call would have
      }
      step.apply(code, household, readings.epochS, readings.units, readings.recordMs, readings.n, alerts);
      if (household.empty()) {
        if (held) {
          store.remove(code);
        }
      } else {
        byte[] blob = household.encode();
        store.put(code, blob);
        meta.add(household, blob.length, rules.warmup);
      }
    }
    tally.late += step.late;
    tally.duplicates += step.duplicates;
    for (Alert alert : alerts) {
      tally.alert(alert);
      out.add(Output.of(alert, rules.slideS));
    }
    meta.watermarkMs = watermarkMs;
    return out;
  }

  /**
   * The households of the batch the bucket takes, with their state (null: new), each taken out of
   * `meta`'s count: those it holds, and new ones in the order they first appear while it has room
   * (docs/contract.md, "The bound on households"). A household whose state the bucket's last call
   * would have dropped is new.
   */
  private Map<Long, Household> admit(Store store, Meta meta) {
    Map<Long, Household> taken = new LinkedHashMap<>();
    List<Long> arrivals = new ArrayList<>();
    for (long code : batch.keySet()) {
      byte[] blob = store.get(code);
      Household household = blob == null ? null : Household.decode(blob);
      if (household != null) {
        meta.remove(household, blob.length, rules.warmup);
      }
      if (household != null && meta.holds(household, rules)) {
        taken.put(code, household);
      } else {
        if (household != null) {
          store.remove(code);
        }
        arrivals.add(code);
      }
    }
    long held = meta.households + taken.size();
    if (arrivals.size() > rules.capacity - held) {
      held = sweep(store, meta, taken.keySet()) + taken.size();
    }
    for (int i = 0; i < arrivals.size() && i < rules.capacity - held; i++) {
      taken.put(arrivals.get(i), null);
    }
    return taken;
  }

  /**
   * Drops every household the bucket's last call would have dropped, so that its count is exact
   * (only when new households would not fit otherwise); returns the households it still holds,
   * less `taking` (already taken out of the count).
   */
  private long sweep(Store store, Meta meta, java.util.Set<Long> taking) {
    Meta kept = new Meta();
    List<Long> gone = new ArrayList<>();
    store.forEach((code, blob) -> {
      if (taking.contains(code)) {
        return;
      }
      Household household = Household.decode(blob);
      if (meta.holds(household, rules)) {
        kept.add(household, blob.length, rules.warmup);
      } else {
        gone.add(code);
      }
    });
    gone.forEach(store::remove);
    meta.households = kept.households;
    meta.bytes = kept.bytes;
    meta.warm = kept.warm;
    meta.warming = kept.warming;
    return kept.households;
  }

  private void refuse(long code, Readings readings) {
    for (int i = 0; i < readings.n; i++) {
      out.add(Output.refused(code, readings.epochS[i], readings.units[i], readings.positions[i]));
    }
    tally.reasons.merge(HOUSEHOLD_LIMIT, (long) readings.n, Long::sum);
  }

  /** The reason field of a dead letter (to_json writes it after the raw text, whose quotes it escapes). */
  static String reason(String letter) {
    String field = "\"reason\":\"";
    int at = letter.lastIndexOf(field);
    if (at < 0) {
      return "unknown";
    }
    int from = at + field.length();
    return letter.substring(from, letter.indexOf('"', from));
  }
}
