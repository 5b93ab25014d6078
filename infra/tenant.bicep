// Tenant-level piece: the Microsoft Entra ID diagnostic setting that streams sign-in and audit
// logs to the raw hub.
//
// Who can deploy it:
//   * a Microsoft Entra role that may manage Entra diagnostic settings: Security Administrator
//     (least privilege) or Global Administrator; the tenant needs Entra ID P1 or P2 for sign-in logs;
//   * ARM rights for a tenant-scope deployment (Microsoft.Resources/deployments/* at scope "/"),
//     e.g. Owner or Contributor at "/", which a Global Administrator grants after elevating access;
//   * listKeys on the raw namespace's `diagnostics-send` rule (Contributor on the raw namespace).
//
//   az deployment tenant create -l <region> -f infra/tenant.bicep \
//     -p diagnosticsSendRuleId=<main output diagnosticsSendRuleId>
//
// Deleting the resource group does NOT remove this setting; see infra/README.md (Tear down).

targetScope = 'tenant'

@description('Resource id of the Send-only authorization rule on the raw namespace (main.bicep output diagnosticsSendRuleId).')
param diagnosticsSendRuleId string

@description('Raw hub the Entra ID logs are delivered to.')
param rawHubName string = 'raw'

@description('Name of the Entra ID diagnostic setting.')
param diagnosticSettingName string = 'stormwatch-entra'

@description('Entra ID log categories to stream.')
param categories array = [
  'SignInLogs'
  'NonInteractiveUserSignInLogs'
  'ServicePrincipalSignInLogs'
  'ManagedIdentitySignInLogs'
  'AuditLogs'
]

resource entraLogs 'microsoft.aadiam/diagnosticSettings@2017-04-01' = {
  name: diagnosticSettingName
  properties: {
    eventHubAuthorizationRuleId: diagnosticsSendRuleId
    eventHubName: rawHubName
    logs: [for category in categories: {
      category: category
      enabled: true
    }]
  }
}

output entraDiagnosticSettingName string = entraLogs.name
