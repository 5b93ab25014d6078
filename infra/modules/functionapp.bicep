// Function app on the Flex Consumption plan (Linux, Python 3.11) with a user-assigned identity
// (see identity.bicep for why). Every connection is identity-based: there is no connection
// string, account key or SAS anywhere in the app settings.

@description('Azure region.')
param location string

@description('Flex Consumption plan name.')
param planName string

@description('Function app name (globally unique).')
param appName string

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Blob container URL for deployment packages (authenticated with the identity).')
param deploymentContainerUrl string

@description('Upper bound of instances the platform may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory per instance in MB (CPU is allotted proportionally).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Application settings (names and values, no secrets).')
param appSettings object

@description('Spread instances over availability zones (region permitting; adds always-ready instances).')
param zoneRedundant bool = false

@description('Tags for the resources.')
param tags object = {}

@description('Client id of the Entra ID app registration that signs analysts in (README "Entra ID sign-in"); empty: function keys only.')
param authClientId string = ''

@description('Entra ID tenant of that app registration.')
param authTenantId string = tenant().tenantId

@description('Inbound allow-list: IP ranges (CIDR) or service tags (e.g. AzureCloud); empty: reachable from anywhere.')
param allowedInbound array = []

var entraSignIn = !empty(authClientId)
// Service tags are names without a slash or dot; everything else is an address range.
var inboundRules = [for (source, index) in allowedInbound: {
  name: 'allow-${index}'
  action: 'Allow'
  priority: 100 + index
  tag: contains(source, '/') || contains(source, '.') || contains(source, ':') ? 'Default' : 'ServiceTag'
  ipAddress: source
}]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is the zoneRedundant parameter, off by default: it exists only in some regions and makes Flex Consumption keep at least two always-ready (billed) instances per function.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
    zoneRedundant: zoneRedundant
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Public inbound access is required: enrich_fn is an HTTP API and this deployment has no VNet or private endpoints; HTTPS only, TLS 1.2+.
  // checkov:skip=CKV_AZURE_17: Callers of the enrichment API authenticate at the application layer (function keys, or Entra ID through App Service authentication) over TLS; mutual-TLS client certificates are not part of this design.
  // checkov:skip=CKV_AZURE_212: Not applicable to Flex Consumption: the platform scales instances per trigger (numberOfWorkers is not a Flex setting); failover is the platform's job.
  // checkov:skip=CKV_AZURE_213: Platform health check (healthCheckPath) is not supported on the Flex Consumption plan.
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    siteConfig: {
      // Part of the site itself (not a separate config resource) so the host's first start
      // already sees every setting.
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      // Off by default; with an allow-list everything else is refused, the deployment endpoint included.
      ipSecurityRestrictions: inboundRules
      ipSecurityRestrictionsDefaultAction: empty(allowedInbound) ? 'Allow' : 'Deny'
      scmIpSecurityRestrictionsUseMain: true
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Entra ID sign-in in front of every HTTP route (App Service Authentication): browsers are sent to the
// sign-in page, API callers present a bearer token for the app registration. The platform then hands the
// app the caller's claims (X-MS-CLIENT-PRINCIPAL, which callers cannot set themselves); the app checks the
// reader and responder app roles (README "Entra ID sign-in"). No client secret: the browser flow takes
// an ID token only.
resource authentication 'Microsoft.Web/sites/config@2024-04-01' = if (entraSignIn) {
  // checkov:skip=CKV_AZURE_13: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  // checkov:skip=CKV_AZURE_63: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  // checkov:skip=CKV_AZURE_65: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  // checkov:skip=CKV_AZURE_66: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  // checkov:skip=CKV_AZURE_80: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  // checkov:skip=CKV_AZURE_88: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  // checkov:skip=CKV_AZURE_222: checkov reads this authentication-settings resource (sites/config authsettingsV2) as a whole web app; the site itself carries and passes the app checks.
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

// No publishing with user name and password: deployments authenticate with Entra ID.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output entraSignIn bool = entraSignIn
output defaultHostName string = app.properties.defaultHostName
