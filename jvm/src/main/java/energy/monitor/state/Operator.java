package energy.monitor.state;

import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;


/** What the Python job calls (pipeline/job/jvm.py): the staged readings in, one row per alert, refused reading or dead letter out. */
public final class Operator {
  /** The columns of an output row (pipeline/job/state.py's OUTPUT_COLUMNS, one value each). */
  public static final StructType OUTPUT = new StructType()
      .add("household", DataTypes.LongType)
      .add("window_start", DataTypes.LongType)
      .add("kwh_units", DataTypes.LongType)
      .add("dead_letter", DataTypes.StringType)
      .add("kind", DataTypes.LongType)
      .add("threshold", DataTypes.DoubleType)
      .add("usual", DataTypes.DoubleType)
      .add("excess", DataTypes.DoubleType)
      .add("windows", DataTypes.LongType)
      .add("slot", DataTypes.LongType);

  private Operator() {
  }

  /** `seed`: the history's baselines as seed bytes (Seed), broadcast, or null. */
  public static Dataset<Row> apply(Dataset<Row> staged, String rules, TallyAccumulator tally, Broadcast<byte[]> seed) {
    // Grouped by the column, not by a function of each row: a function would deserialize every
    // row once more just to read its key.
    return staged
        .groupBy(staged.col("bucket"))
        .as(Encoders.LONG(), Encoders.row(staged.schema()))
        .transformWithState(new EnergyProcessor(new Rules(rules), tally, seed), TimeMode.EventTime(), OutputMode.Append(),
            Encoders.row(OUTPUT));
  }
}
