// Lets the onboarding policy's identity use the raw namespace's Send rule in the diagnostic settings it
// deploys, and nothing else: a custom role with the rule's read and listKeys actions, assigned on that
// one rule (no built-in role is that narrow; Contributor on the namespace would also allow changing it).

targetScope = 'resourceGroup'

@description('Principal id of the policy assignment\'s identity.')
param principalId string

@description('Raw Event Hubs namespace name.')
param namespaceName string

@description('Send-only authorization rule name on that namespace.')
param ruleName string

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: namespaceName
}

resource sendRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' existing = {
  parent: namespace
  name: ruleName
}

resource listKeysRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'stormwatch-diagnostics-rule-user')
  properties: {
    roleName: 'Stormwatch diagnostics rule user (${resourceGroup().name})'
    description: 'Read and list the keys of the Send-only rule that Activity Log diagnostic settings deliver through.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.EventHub/namespaces/authorizationRules/read'
          'Microsoft.EventHub/namespaces/authorizationRules/listkeys/action'
        ]
        notActions: []
      }
    ]
  }
}

resource ruleUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(sendRule.id, principalId, listKeysRole.id)
  scope: sendRule
  properties: {
    roleDefinitionId: listKeysRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
