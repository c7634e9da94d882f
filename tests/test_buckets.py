"""State buckets spread evenly over Spark's shuffle partitions (stream.bucket_keys)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.job.stage import _murmur3_long, bucket_keys

pytestmark = [pytest.mark.spark]


def test_murmur3_matches_sparks_hash(spark):
    from pyspark.sql import functions as F

    values = [0, 1, -1, 7, 42, 2**31, -2**31 - 1, 2**40 + 5, 2**63 - 1, -2**63, 123_456_789_012]
    rows = spark.createDataFrame([(v,) for v in values], "v long").select("v", F.hash("v").alias("h")).collect()
    expected = {r.v: r.h for r in rows}
    assert _murmur3_long(np.array(values, dtype=np.int64)).tolist() == [expected[v] for v in values]


@pytest.mark.parametrize("buckets, partitions", [(64, 2), (8, 2), (7, 3), (64, 8), (5, 1), (3, 4)])
def test_each_shuffle_partition_gets_its_share_of_buckets(spark, buckets, partitions):
    from pyspark.sql import functions as F

    keys = bucket_keys(buckets, partitions)
    assert len(set(keys)) == buckets
    # Spark's own hash partitioning of the key column, as the stateful operator's shuffle does.
    placed = (spark.createDataFrame([(k,) for k in keys], "bucket long").repartition(partitions, "bucket")
              .select(F.spark_partition_id().alias("p")).groupBy("p").count().collect())
    counts = sorted([r["count"] for r in placed] + [0] * (partitions - len(placed)))
    assert counts[-1] - counts[0] <= 1, counts
    assert sum(counts) == buckets


def test_keys_depend_only_on_the_counts():
    """A restarted job must find its state under the same keys."""
    assert bucket_keys(64, 2) == bucket_keys(64, 2)
    assert bucket_keys(64, 2) != bucket_keys(64, 4)
