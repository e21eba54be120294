'use strict'
// One admin scenario on args.topic; every step's outcome goes into the printed JSON (errors
// included, as {error: {type, code}}) for tests/clients/test_kafkajs.py to check.
const { ConfigResourceTypes, CompressionTypes } = require('kafkajs')
const { run, client, attempt } = require('./common')

run(async (args) => {
  const kafka = client(args)
  const admin = kafka.admin()
  const topic = args.topic
  const out = {}
  await admin.connect()
  try {
    // waitForLeaders would ask for the (not created) topic's metadata: off for validateOnly.
    out.createValidateOnly = await attempt(() => admin.createTopics({
      validateOnly: true, waitForLeaders: false, topics: [{ topic, numPartitions: 2, replicationFactor: 1 }]
    }))
    out.listAfterValidateOnly = await admin.listTopics()
    out.create = await attempt(() => admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: 2, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '7200000' }] }]
    }))
    out.createAgain = await attempt(() => admin.createTopics({ topics: [{ topic, numPartitions: 1 }] }))
    out.createInvalidName = await attempt(() => admin.createTopics({ topics: [{ topic: 'no spaces allowed', numPartitions: 1 }] }))
    out.createUnknownConfig = await attempt(() => admin.createTopics({
      topics: [{ topic: topic + '-cfg', numPartitions: 1, configEntries: [{ name: 'retention.sometimes', value: '1' }] }]
    }))
    out.metadata = await admin.fetchTopicMetadata({ topics: [topic] })
    out.listTopics = await admin.listTopics()

    // Some data to look up: 10 records per partition, timestamps ts0 + i * 1000.
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    for (const partition of [0, 1]) {
      await producer.send({
        topic,
        acks: -1,
        compression: CompressionTypes.GZIP,
        messages: Array.from({ length: 10 }, (_, i) => ({
          partition, key: `k${i}`, value: `p${partition}-v${i}`, timestamp: String(args.ts0 + i * 1000)
        }))
      })
    }
    await producer.disconnect()

    out.offsets = await admin.fetchTopicOffsets(topic)
    out.offsetsByTimestamp = {}
    for (const delta of args.timestampDeltas) {
      out.offsetsByTimestamp[delta] = await admin.fetchTopicOffsetsByTimestamp(topic, args.ts0 + delta)
    }

    const describe = () => admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }]
    })
    out.describe = await describe()
    out.alterValidateOnly = await attempt(() => admin.alterConfigs({
      validateOnly: true,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '1' }] }]
    }))
    out.alter = await attempt(() => admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '60000' }, { name: 'segment.bytes', value: '2097152' }] }]
    }))
    out.describeAfterAlter = await describe()
    out.alterUnknown = await attempt(() => admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'no.such.key', value: '1' }] }]
    }))

    out.createPartitions = await attempt(() => admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] }))
    out.metadataAfterPartitions = await admin.fetchTopicMetadata({ topics: [topic] })
    out.createPartitionsShrink = await attempt(() => admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] }))

    out.deleteRecords = await attempt(() => admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '4' }] }))
    out.offsetsAfterDeleteRecords = await admin.fetchTopicOffsets(topic)

    out.deleteTopics = await attempt(() => admin.deleteTopics({ topics: [topic], timeout: 10000 }))
    out.listAfterDelete = await admin.listTopics()
    out.deleteMissing = await attempt(() => admin.deleteTopics({ topics: [topic], timeout: 10000 }))
    return out
  } finally {
    await admin.disconnect()
  }
})
