// Pipeline health and silence alerts (Azure Monitor log search alerts over Application Insights) and the
// action group they notify. The signals are the structured lines the functions log (README "Operations →
// Health alerts"): normalize's and detect's batch lines (`lag_ms`, `records_in`, `dead_letters`,
// `origins`), detect's retry line (`outcome: "retry"`, `partition`), and the host's failed invocations.

@description('Azure region of the alert rules.')
param location string

@description('Prefix for the rule names.')
param namePrefix string

@description('Resource id of Application Insights (the rules query its logs).')
param appInsightsId string

@description('Email address the action group notifies; empty for none.')
param alertEmail string = ''

@description('HTTPS webhook the action group calls (Common Alert Schema); empty for none.')
@secure()
param alertWebhookUrl string = ''

@description('A consumer is behind when even its freshest batch in 15 minutes is older than this (ms).')
@minValue(1000)
param lagThresholdMs int = 300000

@description('Failed function invocations in 15 minutes that raise an alert.')
@minValue(1)
param failureThreshold int = 5

@description('Dead-lettered share of normalize\'s records in an hour (percent) that raises an alert.')
@minValue(1)
@maxValue(100)
param deadLetterPercentThreshold int = 5

@description('Retries of detect on one partition in 15 minutes that mean it is looping on a batch.')
@minValue(2)
param detectRetryThreshold int = 3

@description('Hours without events from a subscription or tenant that sent events in the last two days.')
@minValue(1)
@maxValue(47)
param silenceHours int = 6

@description('Tags for the resources.')
param tags object = {}

var batchLines = 'traces | extend line = parse_json(message) | where isnotnull(line.function)'

var rules = [
  {
    name: 'normalize-lag'
    severity: 2
    description: 'normalize_fn has been behind the raw hub by more than ${lagThresholdMs} ms for 15 minutes.'
    query: '${batchLines} | where line.function == "normalize" | summarize freshest_lag_ms = min(todouble(line.lag_ms))'
    measure: 'freshest_lag_ms'
    threshold: lagThresholdMs
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: []
  }
  {
    name: 'detect-lag'
    severity: 2
    description: 'detect_fn has been behind the normalized hub by more than ${lagThresholdMs} ms for 15 minutes.'
    query: '${batchLines} | where line.function == "detect" | summarize freshest_lag_ms = min(todouble(line.lag_ms))'
    measure: 'freshest_lag_ms'
    threshold: lagThresholdMs
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: []
  }
  {
    name: 'function-failures'
    severity: 1
    description: 'Function invocations failed (only outages raise: storage or Event Hubs unreachable).'
    query: 'requests | where success == false | summarize failures = count() by operation_Name'
    measure: 'failures'
    threshold: failureThreshold
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: [
      'operation_Name'
    ]
  }
  {
    name: 'dead-letter-rate'
    severity: 2
    description: 'More than ${deadLetterPercentThreshold}% of normalize\'s records became dead letters in an hour.'
    query: '${batchLines} | where line.function == "normalize" | summarize records = sum(toint(line.records_in)), dead = sum(toint(line.dead_letters)) | extend dead_letter_percent = iff(records == 0, 0.0, 100.0 * dead / records)'
    measure: 'dead_letter_percent'
    threshold: deadLetterPercentThreshold
    window: 'PT1H'
    frequency: 'PT15M'
    dimensions: []
  }
  {
    name: 'detect-retry-loop'
    severity: 1
    description: 'detect_fn retried the same partition ${detectRetryThreshold} times or more in 15 minutes: the partition is stalled.'
    query: '${batchLines} | where line.function == "detect" and line.outcome == "retry" | summarize retries = count() by partition = tostring(line.partition)'
    measure: 'retries'
    threshold: detectRetryThreshold - 1
    window: 'PT15M'
    frequency: 'PT5M'
    dimensions: [
      'partition'
    ]
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${namePrefix}-health'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'stormwatch'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
    webhookReceivers: empty(alertWebhookUrl) ? [] : [
      {
        name: 'webhook'
        serviceUri: alertWebhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

resource health 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Stormwatch: ${rule.name}'
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: rule.measure
          dimensions: [for dimension in rule.dimensions: {
            name: dimension
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

// Silence: an origin (subscription, or tenant:<id> for Entra ID) that sent events in the last two days (the
// longest look-back a log search alert takes) and none for silenceHours: a removed diagnostic setting, or
// tampering. It stays fired until an operator closes it (autoMitigate off): a silent source does not heal.
resource silence 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-silence'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Stormwatch: silence'
    description: 'A subscription or tenant that sent events in the last two days has sent none for ${silenceHours} hours.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    criteria: {
      allOf: [
        {
          query: '${batchLines} | where line.function == "normalize" | mv-expand origin = bag_keys(line.origins) to typeof(string) | summarize last_seen = max(timestamp) by origin | extend silent_hours = datetime_diff("hour", now(), last_seen)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'silent_hours'
          dimensions: [
            {
              name: 'origin'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThanOrEqual'
          threshold: silenceHours
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output actionGroupId string = actionGroup.id
