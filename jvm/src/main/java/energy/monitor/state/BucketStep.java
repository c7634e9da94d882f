package energy.monitor.state;

import java.util.ArrayList;
import java.util.List;
import java.util.function.LongPredicate;

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
  private final BucketReadings batch = new BucketReadings();
  private final List<Output> out = new ArrayList<>();
  final Tally tally = new Tally();

  /** `seed`: the baselines to adopt (null: none). */
  BucketStep(Rules rules, Seed seed) {
    this.rules = rules;
    this.seed = seed;
  }

  void reading(long household, long epochS, long units, long recordMs, long position) {
    batch.add(household, epochS, units, recordMs, position);
  }

  void deadLetter(String document) {
    tally.reasons.merge(reason(document), 1L, Long::sum);
    out.add(Output.letter(document));
  }

  /** The batch applied to the bucket's households in `store`; `meta` is updated to match. */
  List<Output> run(long watermarkMs, Store store, Meta meta) {
    batch.group();
    Step step = new Step(rules, watermarkMs, seed);
    Household[] held = new Household[batch.households];
    boolean[] taken = admit(store, meta, held);
    List<Alert> alerts = new ArrayList<>();
    for (int i = 0; i < batch.households; i++) {
      long code = batch.codes[i];
      if (!taken[i]) {
        refuse(code, batch.start[i], batch.start[i + 1]);
        continue;
      }
      Household household = held[i];
      if (household == null) {
        household = Household.fresh(rules);
      } else if (household.learning && !household.remembered(meta.horizonS(rules), rules.windowS)) {
        household.forgetBaseline();  // as the bucket's last call would have
      }
      step.apply(code, household, batch, batch.start[i], batch.start[i + 1], alerts);
      if (household.empty()) {
        if (held[i] != null) {
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
   * Which of the batch's households the bucket takes, each taken out of `meta`'s count, with the
   * state of those it holds in `held` (null: new): those it holds, and new ones in the order they
   * first appear while it has room (docs/contract.md, "The bound on households"). A household
   * whose state the bucket's last call would have dropped is new.
   */
  private boolean[] admit(Store store, Meta meta, Household[] held) {
    boolean[] taken = new boolean[batch.households];
    int[] arrivals = new int[batch.households];
    int arriving = 0;
    for (int i = 0; i < batch.households; i++) {
      long code = batch.codes[i];
      byte[] blob = store.get(code);
      Household household = blob == null ? null : Household.decode(blob);
      if (household != null) {
        meta.remove(household, blob.length, rules.warmup);
      }
      if (household != null && meta.holds(household, rules)) {
        taken[i] = true;
        held[i] = household;
      } else {
        if (household != null) {
          store.remove(code);
        }
        arrivals[arriving++] = i;
      }
    }
    long holding = batch.households - arriving;
    long room = rules.capacity - meta.households - holding;
    if (arriving > room) {
      LongPredicate isTaken = code -> {
        int i = batch.find(code);
        return i >= 0 && taken[i];
      };
      room = rules.capacity - sweep(store, meta, isTaken) - holding;
    }
    for (int a = 0; a < arriving && a < room; a++) {
      taken[arrivals[a]] = true;
    }
    return taken;
  }

  /**
   * Drops every household the bucket's last call would have dropped, so that its count is exact
   * (only when new households would not fit otherwise); returns the households it still holds,
   * less those `taking` (already taken out of the count).
   */
  private long sweep(Store store, Meta meta, LongPredicate taking) {
    Meta kept = new Meta();
    List<Long> gone = new ArrayList<>();
    store.forEach((code, blob) -> {
      if (taking.test(code)) {
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

  private void refuse(long code, int from, int to) {
    for (int i = from; i < to; i++) {
      out.add(Output.refused(code, batch.epochS[i], batch.units[i], batch.positions[i]));
    }
    tally.reasons.merge(HOUSEHOLD_LIMIT, (long) (to - from), Long::sum);
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
