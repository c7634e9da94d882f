package energy.monitor.state;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;
import org.apache.spark.TaskContext;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.streaming.MapState;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.StatefulProcessor;
import org.apache.spark.sql.streaming.TTLConfig;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.streaming.TimerValues;
import org.apache.spark.sql.streaming.ValueState;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The job's state operator, keyed by state bucket: each household's state in the bucket's map,
 * read and written only when a batch holds a reading of it (BucketStep), and the bucket's numbers
 * (Meta) beside them.
 */
public final class EnergyProcessor extends StatefulProcessor<Long, Row, Row> {
  static final String BATCH_ID_PROPERTY = "streaming.sql.batchId";

  private final Rules rules;
  private final TallyAccumulator tally;
  private final Broadcast<byte[]> seed;
  private transient MapState<Long, byte[]> households;
  private transient ValueState<byte[]> bucket;

  /** `seed`: the history's baselines to adopt (pipeline/job/seeding.py), or null. */
  public EnergyProcessor(Rules rules, TallyAccumulator tally, Broadcast<byte[]> seed) {
    this.rules = rules;
    this.tally = tally;
    this.seed = seed;
  }

  @Override
  public void init(OutputMode outputMode, TimeMode timeMode) {
    households = getHandle().getMapState("households", Encoders.LONG(), Encoders.BINARY(), TTLConfig.NONE());
    bucket = getHandle().getValueState("bucket", Encoders.BINARY(), TTLConfig.NONE());
  }

  @Override
  public scala.collection.Iterator<Row> handleInputRows(Long key, scala.collection.Iterator<Row> rows,
                                                        TimerValues timers) {
    BucketStep step = new BucketStep(rules, seed == null ? null : Seed.of(seed.value()));
    int household = -1;
    int epoch = -1;
    int units = -1;
    int record = -1;
    int position = -1;
    int letter = -1;
    while (rows.hasNext()) {
      Row row = rows.next();
      if (household < 0) {
        household = row.fieldIndex("household");
        epoch = row.fieldIndex("epoch_s");
        units = row.fieldIndex("kwh_units");
        record = row.fieldIndex("record_ms");
        position = row.fieldIndex("position");
        letter = row.fieldIndex("dead_letter");
      }
      long code = row.getLong(household);
      if (code < 0) {
        step.deadLetter(row.getString(letter));
      } else {
        step.reading(code, row.getLong(epoch), row.getLong(units), row.getLong(record), row.getLong(position));
      }
    }
    Meta meta = Meta.decode(bucket.exists() ? bucket.get() : null);
    List<Output> outputs = step.run(timers.getCurrentWatermarkInMs(), new MapStore(households), meta);
    bucket.update(meta.encode());
    long batch = Long.parseLong(TaskContext.get().getLocalProperty(BATCH_ID_PROPERTY));
    tally.add(step.tally.line(batch, key, meta.households, meta.bytes, meta.warm, meta.warming));
    List<Row> out = new ArrayList<>(outputs.size());
    for (Output o : outputs) {
      out.add(RowFactory.create(o.household, o.windowStart, o.units, o.deadLetter, (long) o.kind, o.threshold, o.usual,
          o.excess, o.windows, o.slot));
    }
    return CollectionConverters.asScala(out.iterator());
  }

  /** The bucket's MapState as a Store. */
  private record MapStore(MapState<Long, byte[]> map) implements Store {
    @Override
    public byte[] get(long household) {
      return map.getValue(household);
    }

    @Override
    public void put(long household, byte[] blob) {
      map.updateValue(household, blob);
    }

    @Override
    public void remove(long household) {
      map.removeKey(household);
    }

    @Override
    public void forEach(BiConsumer<Long, byte[]> action) {
      scala.collection.Iterator<Tuple2<Long, byte[]>> entries = map.iterator();
      while (entries.hasNext()) {
        Tuple2<Long, byte[]> entry = entries.next();
        action.accept(entry._1(), entry._2());
      }
    }
  }
}
